// Package actorstest holds test helpers for the session actors: a store
// wrapper that injects database faults (errors of each class, outages for a
// number of calls or a duration, stalls until released).
package actorstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/internal/testsignal"
	"github.com/aodhq/aod/persistence"
)

// Errors of each class a store can return.
var (
	// ErrTransient looks like a lost connection: the writer retries it.
	ErrTransient = errors.New("actorstest: injected: dial tcp 127.0.0.1:5432: connect: connection refused")
	// ErrForeignKey is Postgres' foreign-key violation (the session was
	// deleted): permanent, never retried.
	ErrForeignKey error = &pgconn.PgError{Severity: "ERROR", Code: "23503", Message: "injected: insert or update violates foreign key constraint"}
	// ErrUnique is Postgres' unique violation: permanent.
	ErrUnique error = &pgconn.PgError{Severity: "ERROR", Code: "23505", Message: "injected: duplicate key value violates unique constraint"}
)

// Method names a Fault can target.
const (
	MethodLogAppend = "LogAppend"
	// MethodAll targets every method (a database outage).
	MethodAll = "*"
)

// Fault describes failures to inject. The zero Fault (with Err set) fails
// every LogAppend until Heal.
type Fault struct {
	// Err is returned by a faulted call. With Stall set and Err nil, the
	// call proceeds to the real store once released.
	Err error
	// Calls, when > 0, fails only that many calls, then the fault heals.
	Calls int
	// For, when > 0, heals the fault that long after its first faulted
	// call (so an outage can be aimed at a point of a turn with Match).
	For time.Duration
	// Stall, when non-nil, blocks faulted calls until it is closed or their
	// context ends (then they return the context's error).
	Stall <-chan struct{}
	// Methods lists the targeted methods (nil: LogAppend only; MethodAll:
	// every method).
	Methods []string
	// Match, when set, faults only LogAppend calls whose batch it accepts
	// (other methods are faulted regardless).
	Match func(events []*persistence.Event) bool
}

// FaultStore wraps an actors.Store and injects the current Fault.
type FaultStore struct {
	actors.Store

	// Faulted carries the method name of each faulted call (after its
	// stall, if any).
	Faulted testsignal.TestSignal[string]

	mu       sync.Mutex
	fault    *Fault
	until    time.Time
	left     int
	calls    atomic.Int64
	failures atomic.Int64
}

var _ actors.Store = (*FaultStore)(nil)

// NewFaultStore wraps s; it injects nothing until Inject.
func NewFaultStore(s actors.Store) *FaultStore { return &FaultStore{Store: s} }

// Inject replaces the current fault with f.
func (s *FaultStore) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = &f
	s.left = f.Calls
	s.until = time.Time{}
}

// Heal removes the current fault.
func (s *FaultStore) Heal() {
	s.mu.Lock()
	s.fault = nil
	s.mu.Unlock()
}

// LogAppendCalls counts LogAppend calls (faulted or not).
func (s *FaultStore) LogAppendCalls() int64 { return s.calls.Load() }

// Failures counts faulted calls.
func (s *FaultStore) Failures() int64 { return s.failures.Load() }

// check returns the fault for this call, or nil to pass it through.
func (s *FaultStore) check(method string, events []*persistence.Event) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault
	if f == nil {
		return nil
	}
	if !s.until.IsZero() && !time.Now().Before(s.until) {
		s.fault = nil
		return nil
	}
	targeted := false
	if f.Methods == nil {
		targeted = method == MethodLogAppend
	}
	for _, m := range f.Methods {
		targeted = targeted || m == method || m == MethodAll
	}
	if !targeted || (method == MethodLogAppend && f.Match != nil && !f.Match(events)) {
		return nil
	}
	if f.For > 0 && s.until.IsZero() {
		s.until = time.Now().Add(f.For)
	}
	if f.Calls > 0 {
		s.left--
		if s.left <= 0 {
			s.fault = nil
		}
	}
	return f
}

// apply runs the fault: stall, then the error (nil: go on to the store).
func (s *FaultStore) apply(ctx context.Context, method string, f *Fault) error {
	if f == nil {
		return nil
	}
	if f.Stall != nil {
		select {
		case <-f.Stall:
		case <-ctx.Done():
			s.failures.Add(1)
			s.Faulted.Signal(method)
			return fmt.Errorf("actorstest: stalled %s: %w", method, ctx.Err())
		}
	}
	if f.Err == nil {
		return nil
	}
	s.failures.Add(1)
	s.Faulted.Signal(method)
	return f.Err
}

func (s *FaultStore) do(ctx context.Context, method string) error {
	return s.apply(ctx, method, s.check(method, nil))
}

// LogAppend implements actors.Store.
func (s *FaultStore) LogAppend(ctx context.Context, events []*persistence.Event, updates ...persistence.Update) error {
	s.calls.Add(1)
	if err := s.apply(ctx, MethodLogAppend, s.check(MethodLogAppend, events)); err != nil {
		return err
	}
	return s.Store.LogAppend(ctx, events, updates...)
}

// AgentGet implements actors.Store.
func (s *FaultStore) AgentGet(ctx context.Context, userID int64, id string) (*persistence.Agent, error) {
	if err := s.do(ctx, "AgentGet"); err != nil {
		return nil, err
	}
	return s.Store.AgentGet(ctx, userID, id)
}

// EnvironmentGet implements actors.Store.
func (s *FaultStore) EnvironmentGet(ctx context.Context, userID int64, id string) (*persistence.Environment, error) {
	if err := s.do(ctx, "EnvironmentGet"); err != nil {
		return nil, err
	}
	return s.Store.EnvironmentGet(ctx, userID, id)
}

// EventsLast implements actors.Store.
func (s *FaultStore) EventsLast(ctx context.Context, sessionID string) ([]persistence.Event, error) {
	if err := s.do(ctx, "EventsLast"); err != nil {
		return nil, err
	}
	return s.Store.EventsLast(ctx, sessionID)
}

// SessionGet implements actors.Store.
func (s *FaultStore) SessionGet(ctx context.Context, userID int64, id string) (*persistence.Session, error) {
	if err := s.do(ctx, "SessionGet"); err != nil {
		return nil, err
	}
	return s.Store.SessionGet(ctx, userID, id)
}

// SessionResources implements actors.Store.
func (s *FaultStore) SessionResources(ctx context.Context, sessionID string) ([]persistence.Resource, error) {
	if err := s.do(ctx, "SessionResources"); err != nil {
		return nil, err
	}
	return s.Store.SessionResources(ctx, sessionID)
}

// SessionSecretEnvVars implements actors.Store.
func (s *FaultStore) SessionSecretEnvVars(ctx context.Context, sessionID string) (map[string]string, error) {
	if err := s.do(ctx, "SessionSecretEnvVars"); err != nil {
		return nil, err
	}
	return s.Store.SessionSecretEnvVars(ctx, sessionID)
}

// SessionStatus implements actors.Store.
func (s *FaultStore) SessionStatus(ctx context.Context, sessionID string) (string, *int, error) {
	if err := s.do(ctx, "SessionStatus"); err != nil {
		return "", nil, err
	}
	return s.Store.SessionStatus(ctx, sessionID)
}

// SessionsActive implements actors.Store.
func (s *FaultStore) SessionsActive(ctx context.Context) ([]persistence.Session, error) {
	if err := s.do(ctx, "SessionsActive"); err != nil {
		return nil, err
	}
	return s.Store.SessionsActive(ctx)
}

// TurnLatest implements actors.Store.
func (s *FaultStore) TurnLatest(ctx context.Context, sessionID string) (*persistence.Turn, error) {
	if err := s.do(ctx, "TurnLatest"); err != nil {
		return nil, err
	}
	return s.Store.TurnLatest(ctx, sessionID)
}
