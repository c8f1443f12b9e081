package actors

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/aodhq/aod/internal/testsignal"
)

// DefaultReconcileInterval is how often a Reconciler sweeps by default.
const DefaultReconcileInterval = 5 * time.Second

// Reconciler is a per-node start/stop service that keeps every unfinished
// session moving: every Interval it lists the pending and running sessions
// (one indexed query) and kicks each one this node owns (cluster.Ownership)
// that has no actor here. It is what resumes a session whose work stopped
// without an outcome (a log batch that could not be committed, a load that
// failed during a database outage) and what picks up a session whose actor
// was lost. The cluster extends it with ownership changes.
type Reconciler struct {
	m        *Manager
	interval time.Duration
	log      *slog.Logger

	// TestSignals are armed by tests (zero: no-ops).
	TestSignals ReconcilerTestSignals

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// ReconcilerTestSignals tell tests what a Reconciler did.
type ReconcilerTestSignals struct {
	// Kicked carries the id of each session a sweep kicked.
	Kicked testsignal.TestSignal[string]
	// Swept carries the number of sessions each sweep kicked (-1: the
	// sweep failed).
	Swept testsignal.TestSignal[int]
}

// Init arms every signal for tb.
func (s *ReconcilerTestSignals) Init(tb testsignal.TB) {
	s.Kicked.Init(tb)
	s.Swept.Init(tb)
}

// NewReconciler builds a reconciler for m's sessions; interval <= 0 means
// DefaultReconcileInterval.
func NewReconciler(m *Manager, interval time.Duration) *Reconciler {
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	return &Reconciler{m: m, interval: interval, log: m.log}
}

// Start begins sweeping in the background, the first sweep one interval
// from now (Manager.Recover covers the start). It is idempotent.
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.done = cancel, make(chan struct{})
	go r.loop(ctx, r.done)
	return nil
}

// Stop ends the sweeps and waits for the one in flight. It is idempotent
// and may be called before Start.
func (r *Reconciler) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (r *Reconciler) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.Sweep(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("session reconcile sweep failed", slog.String("error", err.Error()))
			}
			r.TestSignals.Swept.Signal(-1)
			continue
		}
		if n > 0 {
			r.log.Info("reconciler resumed sessions", slog.Int("sessions", n))
		}
		r.TestSignals.Swept.Signal(n)
	}
}

// Sweep runs one pass and reports how many sessions it kicked.
func (r *Reconciler) Sweep(ctx context.Context) (int, error) {
	qctx, cancel := context.WithTimeout(ctx, max(r.interval, 5*time.Second))
	defer cancel()
	sessions, err := r.m.deps.DB.SessionsActive(qctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range sessions {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if _, local := r.m.deps.Owner.Owner(s.ID); !local || r.m.hasActor(s.ID) {
			continue
		}
		r.m.Kick(s.ID)
		r.m.metrics.reconciled.Inc()
		r.TestSignals.Kicked.Signal(s.ID)
		n++
	}
	return n, nil
}
