package local

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites/runner"
)

// The parts of the runner's escape suite (sprites/runner/escape_test.go)
// that matter through the backend: the identity, the kernel settings, the
// seccomp filter and aod's writes to planted paths.
func TestEscapeThroughBackend(t *testing.T) {
	t.Parallel()
	tb := setup(t, runner.NetworkPrivate)

	res := run(t, tb, sh(`set -e
id -u; id -un; echo $HOME
grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status
echo x > /home/sprite/made
v=$(cat /proc/sys/vm/stat_interval); echo "$v" > /proc/sys/vm/stat_interval 2>/dev/null && echo WROTE-PROC-SYS
unshare -U true 2>/dev/null && echo NESTED-USERNS
true`))
	require.Equal(t, 0, res.code, "stderr: %s", res.stderr)
	require.Equal(t, "1000\nsprite\n/home/sprite\nNoNewPrivs:\t1\nSeccomp:\t2\n", res.stdout)
	fi, err := os.Stat(filepath.Join(tb.dir, tb.name, "home", "made"))
	require.NoError(t, err)
	owner := fi.Sys().(*syscall.Stat_t).Uid
	require.GreaterOrEqual(t, owner, uint32(runner.MinUIDBase), "a file made inside is owned by host uid %d", owner)

	// A FIFO planted where aod writes a config file fails the write at
	// once, with the path and the reason.
	res = run(t, tb, sh(`mkdir -p ~/.codex && mkfifo ~/.codex/auth.json`))
	require.Equal(t, 0, res.code, "stderr: %s", res.stderr)
	done := make(chan error, 1)
	go func() {
		done <- tb.b.WriteFile(t.Context(), tb.name, "/home/sprite/.codex/auth.json", []byte("{}"), 0o600)
	}()
	select {
	case err := <-done:
		require.EqualError(t, err, "write file: write /home/sprite/.codex/auth.json: not a regular file (a FIFO)")
	case <-time.After(5 * time.Second):
		t.Fatal("WriteFile blocked on a planted FIFO")
	}
	err = tb.b.Chmod(t.Context(), tb.name, "/home/sprite/.codex/auth.json", 0o600)
	require.ErrorContains(t, err, "not a regular file")

	// Files aod writes belong to the sandbox user, who can change them.
	require.NoError(t, tb.b.WriteFile(t.Context(), tb.name, "/home/sprite/.config/x/y.json", []byte("{}"), 0o600))
	res = run(t, tb, sh(`stat -c '%u %a' ~/.config/x ~/.config/x/y.json && echo more >> ~/.config/x/y.json && touch ~/.config/x/z`))
	require.Equal(t, result{stdout: "1000 755\n1000 600\n"}, res, "stderr: %s", res.stderr)
}
