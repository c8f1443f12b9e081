// Package janitor holds the sandbox janitor: a per-node service that
// destroys the sandboxes of terminated and deleted sessions.
//
// Terminate and delete forget a session's sandbox handle in the same
// transaction that records it in sandbox_destroys (persistence.SandboxDestroy).
// The janitor retries each record until the backend confirms the sandbox is
// gone (a delete that succeeds or answers not found), so neither a kill -9
// of aod nor a backend outage orphans a sandbox. Each attempt is bounded by
// AttemptTimeout; failed attempts back off exponentially up to MaxBackoff
// and are retried for as long as the record exists (a sandbox costs money
// until it is gone). A confirmation within Settle of the record's creation
// is repeated once Settle has passed, since a create of the same sandbox
// may still have been in flight. After WarnAfter failed attempts every further failure
// is logged at error level and counted in
// aod_sandbox_destroy_attempts_total{outcome="failed"}.
package janitor

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/sprites"
)

// Store is what the janitor needs of the database.
type Store interface {
	SandboxDestroysDue(ctx context.Context, backend string, at time.Time, limit int) ([]persistence.SandboxDestroy, error)
	SandboxDestroyDone(ctx context.Context, backend, handle string) error
	SandboxDestroyDefer(ctx context.Context, backend, handle string, next time.Time) error
	SandboxDestroyFailed(ctx context.Context, backend, handle string, next time.Time, reason string) error
}

// Deleter destroys sandboxes; a missing one gives sprites.ErrNotFound.
type Deleter interface {
	Delete(ctx context.Context, name string) error
}

// Config tunes the janitor. Zero values take the defaults.
type Config struct {
	// Backend is the kind of sandbox this node destroys ("local" or
	// "sprites"); records of other kinds are left alone.
	Backend string
	// Interval is how often due records are looked for without a Wake.
	// Default 5s.
	Interval time.Duration
	// AttemptTimeout bounds one delete call. Default 30s.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay after a failed attempt
	// (doubling per attempt). Defaults 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// Batch caps the records handled per pass. Default 50.
	Batch int
	// WarnAfter is the attempt count from which failures are errors.
	// Default 5.
	WarnAfter int
	// Settle is how long after a record was written a create of the same
	// sandbox may still be in flight (a provisioning that was creating it
	// when the session was terminated, possibly in a process that died
	// since). A delete confirmed before then is repeated once Settle has
	// passed, so a late create cannot leave the sandbox behind. Default 3m.
	Settle time.Duration
}

// Janitor is the start/stop service described in the package doc.
type Janitor struct {
	store   Store
	backend Deleter
	cfg     Config
	log     *slog.Logger
	metrics *prometheus.CounterVec
	wake    chan struct{}

	// TestSignals are sent to when initialised (tests only).
	TestSignals TestSignals

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// TestSignals let tests wait on the janitor instead of polling.
type TestSignals struct {
	// Destroyed receives each handle the backend confirmed gone.
	Destroyed testSignal[string]
	// Failed receives each handle whose attempt failed.
	Failed testSignal[string]
	// Deferred receives each handle confirmed gone before Settle passed.
	Deferred testSignal[string]
}

// Init makes the signals deliver (buffered; a full buffer drops).
func (s *TestSignals) Init() {
	s.Destroyed.init()
	s.Failed.init()
	s.Deferred.init()
}

type testSignal[T any] struct{ ch chan T }

func (s *testSignal[T]) init() { s.ch = make(chan T, 1000) }

func (s *testSignal[T]) signal(v T) {
	if s.ch == nil {
		return
	}
	select {
	case s.ch <- v:
	default:
	}
}

// C returns the signal's channel (nil, never ready, unless initialised).
func (s *testSignal[T]) C() <-chan T { return s.ch }

// New builds a janitor; reg receives its metrics (nil: a private registry).
func New(store Store, backend Deleter, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Janitor {
	cfg.Interval = cmp.Or(cfg.Interval, 5*time.Second)
	cfg.AttemptTimeout = cmp.Or(cfg.AttemptTimeout, 30*time.Second)
	cfg.MinBackoff = cmp.Or(cfg.MinBackoff, time.Second)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, 5*time.Minute)
	cfg.Batch = cmp.Or(cfg.Batch, 50)
	cfg.WarnAfter = cmp.Or(cfg.WarnAfter, 5)
	cfg.Settle = cmp.Or(cfg.Settle, 3*time.Minute)
	if cfg.Backend == "" {
		panic("janitor: Config.Backend is required")
	}
	if log == nil {
		log = slog.Default()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aod", Name: "sandbox_destroy_attempts_total",
		Help: "Sandbox destroy attempts by the janitor, by outcome (deleted, gone, failed).",
	}, []string{"outcome"})
	if err := reg.Register(m); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			m = are.ExistingCollector.(*prometheus.CounterVec)
		} else {
			panic(err)
		}
	}
	return &Janitor{store: store, backend: backend, cfg: cfg, log: log, metrics: m, wake: make(chan struct{}, 1)}
}

// Start runs the janitor in the background until Stop. Starting a started
// janitor does nothing.
func (j *Janitor) Start(ctx context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	j.cancel, j.done = cancel, make(chan struct{})
	go j.run(ctx, j.done)
	return nil
}

// Stop ends the janitor and waits for its current attempt (bounded by
// AttemptTimeout). It tolerates a double stop and a stop before start.
// Records not yet done stay for the next start.
func (j *Janitor) Stop() {
	j.mu.Lock()
	cancel, done := j.cancel, j.done
	j.cancel, j.done = nil, nil
	j.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Wake makes the janitor look for due records now (never blocks).
func (j *Janitor) Wake() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *Janitor) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-j.wake:
		}
		// Sleep until the next pass: the interval, or sooner when an
		// attempt of this pass is due again before it.
		wait := j.cfg.Interval
		for {
			more, retry := j.pass(ctx)
			if retry > 0 && retry < wait {
				wait = retry
			}
			if !more {
				break
			}
		}
		timer.Reset(wait)
	}
}

// pass handles one batch of due records; it reports whether a full batch
// was handled (more may be due) and the shortest backoff it scheduled.
func (j *Janitor) pass(ctx context.Context) (more bool, retry time.Duration) {
	if ctx.Err() != nil {
		return false, 0
	}
	due, err := j.store.SandboxDestroysDue(ctx, j.cfg.Backend, time.Now(), j.cfg.Batch)
	if err != nil {
		if ctx.Err() == nil {
			j.log.Warn("janitor: list pending sandbox destroys", slog.String("error", err.Error()))
		}
		return false, 0
	}
	for _, d := range due {
		if ctx.Err() != nil {
			return false, 0
		}
		if b := j.attempt(ctx, d); b > 0 && (retry == 0 || b < retry) {
			retry = b
		}
	}
	return len(due) == j.cfg.Batch, retry
}

// attempt tries one destroy; after a failure it returns the backoff until
// the record is due again.
func (j *Janitor) attempt(ctx context.Context, d persistence.SandboxDestroy) time.Duration {
	actx, cancel := context.WithTimeout(ctx, j.cfg.AttemptTimeout)
	err := j.backend.Delete(actx, d.Handle)
	cancel()
	if ctx.Err() != nil {
		return 0 // stopping: the record stays due
	}
	if err == nil || errors.Is(err, sprites.ErrNotFound) {
		outcome := "deleted"
		if err != nil {
			outcome = "gone"
		}
		if settled := d.CreatedAt.Add(j.cfg.Settle); time.Now().Before(settled) {
			// Confirm again once no create can be in flight any more.
			if derr := j.store.SandboxDestroyDefer(ctx, d.Backend, d.Handle, settled); derr != nil {
				j.log.Warn("janitor: defer sandbox destroy", slog.String("sandbox", d.Handle), slog.String("error", derr.Error()))
			}
			j.metrics.WithLabelValues(outcome).Inc()
			j.TestSignals.Deferred.signal(d.Handle)
			return time.Until(settled)
		}
		if derr := j.store.SandboxDestroyDone(ctx, d.Backend, d.Handle); derr != nil {
			// The sandbox is gone; the next attempt sees not found.
			j.log.Warn("janitor: finish sandbox destroy", slog.String("sandbox", d.Handle), slog.String("error", derr.Error()))
			return 0
		}
		j.metrics.WithLabelValues(outcome).Inc()
		j.TestSignals.Destroyed.signal(d.Handle)
		return 0
	}
	j.metrics.WithLabelValues("failed").Inc()
	attempts := d.Attempts + 1
	backoff := j.backoff(attempts)
	next := time.Now().Add(backoff)
	attrs := []any{slog.String("sandbox", d.Handle), slog.Int("attempts", attempts),
		slog.Time("next_attempt", next), slog.String("error", err.Error())}
	if attempts >= j.cfg.WarnAfter {
		j.log.Error("janitor: sandbox destroy keeps failing; retrying", attrs...)
	} else {
		j.log.Warn("janitor: sandbox destroy failed; retrying", attrs...)
	}
	if ferr := j.store.SandboxDestroyFailed(ctx, d.Backend, d.Handle, next, err.Error()); ferr != nil && ctx.Err() == nil {
		j.log.Warn("janitor: record sandbox destroy failure", slog.String("sandbox", d.Handle), slog.String("error", ferr.Error()))
	}
	j.TestSignals.Failed.signal(d.Handle)
	return backoff
}

// backoff is MinBackoff·2^(attempts-1), capped at MaxBackoff, with up to
// 20% jitter so many records do not retry in lockstep.
func (j *Janitor) backoff(attempts int) time.Duration {
	d := j.cfg.MinBackoff
	for i := 1; i < attempts && d < j.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, j.cfg.MaxBackoff)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}
