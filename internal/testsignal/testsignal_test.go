package testsignal

import (
	"fmt"
	"testing"
	"time"
)

// fakeTB records a Fatalf instead of ending the test.
type fakeTB struct{ failed string }

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestZeroValueIsANoOp(t *testing.T) {
	t.Parallel()
	var s TestSignal[int]
	s.Signal(1) // never blocks, never panics
	if s.C() != nil {
		t.Fatal("an unarmed signal has no channel")
	}
}

func TestSignalAndWait(t *testing.T) {
	t.Parallel()
	var s TestSignal[string]
	s.Init(t)
	go s.Signal("a")
	if got := s.WaitOrTimeout(); got != "a" {
		t.Fatalf("got %q", got)
	}
	s.RequireEmpty()
}

func TestWaitTimesOutAndRequireEmptyFails(t *testing.T) {
	old := Timeout
	Timeout = 10 * time.Millisecond
	defer func() { Timeout = old }()
	var s TestSignal[int]
	tb := &fakeTB{}
	s.Init(tb)
	s.WaitOrTimeout()
	if tb.failed == "" {
		t.Fatal("WaitOrTimeout did not fail the test")
	}
	tb.failed = ""
	s.Signal(7)
	s.RequireEmpty()
	if tb.failed == "" {
		t.Fatal("RequireEmpty did not fail with a value waiting")
	}
}

func TestFullBufferDrops(t *testing.T) {
	t.Parallel()
	var s TestSignal[int]
	s.Init(t)
	for i := range capacity + 3 {
		s.Signal(i)
	}
	if s.Dropped() != 3 {
		t.Fatalf("dropped %d, want 3", s.Dropped())
	}
}
