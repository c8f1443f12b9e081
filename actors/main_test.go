package actors

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/aodhq/aod/persistence/persistencetest"
)

// TestMain checks for leaked goroutines after every test has run.
//
// Hollywood v1.0.5 has no engine-wide shutdown, but an idle engine holds no
// goroutine: an inbox runs its goroutine only while messages are pending,
// and every test stops its Manager (which poisons every actor). So no
// hollywood allowance is needed, and none is made: a session actor left
// running (or any goroutine the Manager started: writer, load, turn, kill,
// publish, retire) fails the package. If a future hollywood keeps a
// goroutine per engine, allow exactly that function here with
// goleak.IgnoreAnyFunction, never the inbox (that would hide leaked actors).
func TestMain(m *testing.M) {
	code := persistencetest.WrapTestMain(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
