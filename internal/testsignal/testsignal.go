// Package testsignal lets services tell tests that something happened, so
// tests wait on an event instead of polling or sleeping (River's pattern).
//
// A zero TestSignal is a no-op that never blocks and costs one atomic load:
// production code signals unconditionally; only a test that called Init
// receives anything.
package testsignal

import (
	"sync/atomic"
	"time"
)

// TB is the part of testing.TB a signal uses (so production code need not
// import package testing).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Timeout is how long WaitOrTimeout waits.
var Timeout = 10 * time.Second

// capacity bounds the values buffered for a test that has not read them
// yet; beyond it further values are dropped (counted in Dropped).
const capacity = 1024

// TestSignal carries values of T from a service to a test.
type TestSignal[T any] struct {
	state   atomic.Pointer[state[T]]
	dropped atomic.Int64
}

type state[T any] struct {
	tb TB
	ch chan T
}

// Init arms the signal for tb. Call it before the service can signal.
func (s *TestSignal[T]) Init(tb TB) {
	s.state.Store(&state[T]{tb: tb, ch: make(chan T, capacity)})
}

// Signal records v if a test armed the signal; it never blocks.
func (s *TestSignal[T]) Signal(v T) {
	st := s.state.Load()
	if st == nil {
		return
	}
	select {
	case st.ch <- v:
	default:
		s.dropped.Add(1)
	}
}

// Dropped counts values lost to a full buffer.
func (s *TestSignal[T]) Dropped() int64 { return s.dropped.Load() }

// C returns the armed signal's channel (nil before Init), for a select over
// several signals.
func (s *TestSignal[T]) C() <-chan T {
	if st := s.state.Load(); st != nil {
		return st.ch
	}
	return nil
}

// WaitOrTimeout returns the next value, failing the test after Timeout.
func (s *TestSignal[T]) WaitOrTimeout() T {
	st := s.state.Load()
	if st == nil {
		panic("testsignal: WaitOrTimeout before Init")
	}
	st.tb.Helper()
	select {
	case v := <-st.ch:
		return v
	case <-time.After(Timeout):
		st.tb.Fatalf("testsignal: no signal within %s", Timeout)
		var zero T
		return zero
	}
}

// RequireEmpty fails the test if a value is waiting.
func (s *TestSignal[T]) RequireEmpty() {
	st := s.state.Load()
	if st == nil {
		panic("testsignal: RequireEmpty before Init")
	}
	st.tb.Helper()
	select {
	case v := <-st.ch:
		st.tb.Fatalf("testsignal: unexpected signal %v", v)
	default:
	}
}
