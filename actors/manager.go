package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aodhq/aod/cluster"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/sprites"
)

var errWriterStopped = errors.New("actors: session log writer stopped")

// ErrNotOwner is returned for a session another node owns.
var ErrNotOwner = errors.New("actors: session is owned by another node")

// Config tunes the session actors.
type Config struct {
	// WriterQueue is the log writer's queue length in ops (backpressure
	// threshold). Default 256.
	WriterQueue int
	// BatchMax caps the events committed per transaction. Default 256.
	BatchMax int
	// SubscriberBuffer caps each live subscriber's queue in batches.
	// Default 256.
	SubscriberBuffer int
	// SubscriberBufferBytes caps each live subscriber's queue in bytes
	// (event data plus a fixed overhead per event): a subscriber that falls
	// further behind is dropped as lagged and catches up from the log, so a
	// client that stops reading pins at most this much. Default 4 MiB.
	SubscriberBufferBytes int64
	// WriterQueueBytes caps the event bytes queued for the log writer:
	// producers block beyond it (backpressure), like beyond WriterQueue
	// ops. Default 4 MiB.
	WriterQueueBytes int64
	// RecentBytes bounds the newest events a live session's actor keeps in
	// memory, so that most subscribers start without reading the log.
	// Default 64 KiB.
	RecentBytes int64
	// SubscriberGone, when set, is called by a session's actor each time it
	// releases a live subscriber before the work ended: lagged is true when
	// it was dropped for falling behind, false when it was unsubscribed.
	// It runs on the actor's goroutine and must not block (a test signal).
	SubscriberGone func(sessionID string, lagged bool)
	// KillGrace is how long a killed turn's exec may take to report its
	// exit before the turn is finalised anyway. Default 5s.
	KillGrace time.Duration
	// MaxTurnOutput and MaxSessionOutput cap the bytes of output text a
	// turn and a session store: beyond them the turn fails and its exec is
	// killed. Defaults 64 MiB and 256 MiB.
	MaxTurnOutput    int64
	MaxSessionOutput int64
	// ReattachTries bounds the re-attaches to a turn's exec after its
	// output stream was lost (consecutive, without output in between)
	// before the exec is killed and the turn fails. Default 5.
	ReattachTries int
	// ReattachDelay is the delay before the first re-attach, doubling up
	// to 5 s. Default 200ms.
	ReattachDelay time.Duration
	// CommitBudget bounds the retries of one log batch. A batch not
	// committed within it stops the session's work without an outcome
	// (the reconciler resumes it from the last committed batch). Default
	// 54s.
	CommitBudget time.Duration
}

// Deps are the session actors' collaborators.
type Deps struct {
	// DB is the store (a *persistence.DB in production).
	DB      Store
	Backend sprites.Backend
	Owner   cluster.Ownership
	Logger  *slog.Logger
	Config  Config
	// StaticEnv is written first into /tmp/aod-env (e.g. OTel headers).
	StaticEnv [][2]string
	// Destroys is woken when a sandbox was recorded as destroy pending
	// (the sandbox janitor); nil leaves the records to its next pass.
	Destroys interface{ Wake() }
	// Registerer receives the actors' metrics; nil means a private
	// registry.
	Registerer prometheus.Registerer
}

// Manager runs one actor per live session on this node. HTTP handlers talk
// to session actors only through it.
type Manager struct {
	deps   Deps
	engine *actor.Engine
	log    *slog.Logger

	lagged  atomic.Int64
	metrics *metrics

	// TestSignals are armed by tests (zero: no-ops).
	TestSignals TestSignals

	mu      sync.Mutex
	gens    uint64
	actors  map[string]*actorEntry
	closing bool
	bg      sync.WaitGroup // background sandbox deletes
	work    sync.WaitGroup // every goroutine an actor starts (see goTracked)
	bgCtx   context.Context
	bgStop  context.CancelFunc
}

type actorEntry struct {
	pid *actor.PID
	// gen tells this actor's messages from a predecessor's stragglers.
	gen      uint64
	stopping bool
	rekick   bool
	// panicked: Receive panicked; the failure is recorded once the actor
	// and its writer are gone, before a successor can start.
	panicked bool
	stopped  chan struct{}
	// writerDone is closed when the actor's log writer has drained, so a
	// successor never runs a second writer for the session (D7).
	writerDone chan struct{}
}

// NewManager builds the actor engine.
func NewManager(deps Deps) (*Manager, error) {
	c := &deps.Config
	if c.WriterQueue <= 0 {
		c.WriterQueue = 256
	}
	if c.BatchMax <= 0 {
		c.BatchMax = 256
	}
	if c.SubscriberBuffer <= 0 {
		c.SubscriberBuffer = 256
	}
	if c.SubscriberBufferBytes <= 0 {
		c.SubscriberBufferBytes = 4 << 20
	}
	if c.RecentBytes <= 0 {
		c.RecentBytes = 64 << 10
	}
	if c.WriterQueueBytes <= 0 {
		c.WriterQueueBytes = 4 << 20
	}
	if c.KillGrace <= 0 {
		c.KillGrace = 5 * time.Second
	}
	if c.MaxTurnOutput <= 0 {
		c.MaxTurnOutput = 64 << 20
	}
	if c.MaxSessionOutput <= 0 {
		c.MaxSessionOutput = 256 << 20
	}
	if c.ReattachTries <= 0 {
		c.ReattachTries = 5
	}
	if c.ReattachDelay <= 0 {
		c.ReattachDelay = 200 * time.Millisecond
	}
	if c.CommitBudget <= 0 {
		c.CommitBudget = defaultCommitBudget
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Owner == nil {
		deps.Owner = cluster.Single{Name: "local"}
	}
	e, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		return nil, fmt.Errorf("actors: engine: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{deps: deps, engine: e, log: deps.Logger, actors: map[string]*actorEntry{}, bgCtx: ctx, bgStop: cancel}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m.metrics = newMetrics(reg, m)
	return m, nil
}

// Recover picks up every session left pending or running (D20): each gets
// an actor, which re-provisions, re-attaches or fails it.
func (m *Manager) Recover(ctx context.Context) (int, error) {
	sessions, err := m.deps.DB.SessionsActive(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range sessions {
		if _, local := m.deps.Owner.Owner(s.ID); !local {
			continue
		}
		m.Kick(s.ID)
		n++
	}
	return n, nil
}

// Kick makes sure the session's actor runs and looks for work: call it
// after creating a session or queueing a turn.
func (m *Manager) Kick(sessionID string) {
	m.send(sessionID, &kick{}, true)
}

// Terminate stops the session's running work, if any. The caller has
// already marked the session terminated; Destroy removes the sandbox.
func (m *Manager) Terminate(sessionID string) {
	m.send(sessionID, &terminateCmd{}, false)
}

// Destroy asks the sandbox janitor to look for pending destroys now. The
// caller has already recorded the handle as destroy pending in the
// transaction that forgot it (persistence.SandboxDestroyAdd); the janitor
// retries it until the backend confirms.
func (m *Manager) Destroy(handle string) {
	if handle != "" && m.deps.Destroys != nil {
		m.deps.Destroys.Wake()
	}
}

// destroyLater records a sandbox as destroy pending and wakes the janitor.
func (m *Manager) destroyLater(ctx context.Context, backend, handle string) error {
	if err := m.deps.DB.SandboxDestroyAdd(ctx, backend, handle); err != nil {
		return err
	}
	m.Destroy(handle)
	return nil
}

// Subscribe attaches a live subscriber to the session's actor. live is false
// when the session has no running work (serve it from the log alone).
// lastID is the newest durable event id when the subscriber was attached:
// everything after it arrives through sub.Take. Subscribe waits for the
// actor's answer only as long as ctx lives (a session actor still loading
// answers once it has read its state): give ctx a short deadline.
func (m *Manager) Subscribe(ctx context.Context, sessionID string) (sub *Subscription, live bool, lastID int64, err error) {
	if _, local := m.deps.Owner.Owner(sessionID); !local {
		return nil, false, 0, ErrNotOwner
	}
	sub = newSubscription(m.deps.Config.SubscriberBuffer, m.deps.Config.SubscriberBufferBytes)
	sub.actorID = strings.Clone(sessionID)
	if !m.send(sessionID, &subscribeCmd{sub: sub}, true) {
		return nil, false, 0, nil
	}
	select {
	case r := <-sub.ready:
		if !r.live {
			return nil, false, 0, nil
		}
		return sub, true, r.lastID, nil
	case <-ctx.Done():
		m.Unsubscribe(sub)
		return nil, false, 0, ctx.Err()
	}
}

// AttachInfo describes a session served by Attach.
type AttachInfo struct {
	// Provider and Runtime are the session's (the stream's start event).
	Provider, Runtime string
	// Covered: the subscription's queue already holds every event after
	// the cursor, so the caller need not read the log first.
	Covered bool
}

// Attach subscribes to the session's actor only if it is live on this node
// and running the session's work for userID: it spawns nothing and reads
// nothing from the database, and queues first the events after `after`
// that the actor still holds. ok is false otherwise (the caller looks the
// session up and uses Subscribe or the log). It waits for the actor as
// long as ctx lives.
func (m *Manager) Attach(ctx context.Context, sessionID string, userID, after int64) (sub *Subscription, info AttachInfo, ok bool) {
	if _, local := m.deps.Owner.Owner(sessionID); !local {
		return nil, info, false
	}
	sub = newSubscription(m.deps.Config.SubscriberBuffer, m.deps.Config.SubscriberBufferBytes)
	sub.actorID = strings.Clone(sessionID)
	if !m.send(sessionID, &attachCmd{sub: sub, userID: userID, after: after}, false) {
		return nil, info, false
	}
	select {
	case r := <-sub.ready:
		if !r.live {
			return nil, info, false
		}
		return sub, AttachInfo{Provider: r.provider, Runtime: r.runtime, Covered: r.covered}, true
	case <-ctx.Done():
		m.Unsubscribe(sub)
		return nil, info, false
	}
}

// Unsubscribe detaches a subscriber (idempotent).
func (m *Manager) Unsubscribe(sub *Subscription) {
	m.send(sub.actorID, &unsubscribeCmd{sub: sub}, false)
}

// send delivers msg to the session's actor. With spawn, a missing actor is
// created, and one that is retiring is first waited for (hollywood would
// hand back the stopping PID for a duplicate id). Without spawn, it reports
// false when there is no running actor. Sends happen under m.mu, so no
// message is ever queued behind a retiring actor's poison pill.
func (m *Manager) send(sessionID string, msg any, spawn bool) bool {
	// Callers may pass strings that alias pooled request buffers (fiber);
	// the id outlives the request as a map key and an actor's identity.
	sessionID = strings.Clone(sessionID)
	for {
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			return false
		}
		e := m.actors[sessionID]
		switch {
		case e == nil && !spawn, e != nil && e.stopping && !spawn:
			m.mu.Unlock()
			return false
		case e == nil:
			e = m.spawnLocked(sessionID)
		case e.stopping:
			stopped := e.stopped
			m.mu.Unlock()
			<-stopped
			continue
		}
		m.engine.Send(e.pid, msg)
		m.mu.Unlock()
		return true
	}
}

func (m *Manager) spawnLocked(sessionID string) *actorEntry {
	m.gens++
	e := &actorEntry{gen: m.gens, stopped: make(chan struct{}), writerDone: make(chan struct{})}
	m.actors[sessionID] = e
	e.pid = m.engine.Spawn(newSessionActor(m, sessionID, e), "session",
		actor.WithID(sessionID),
		actor.WithMaxRestarts(0),
		// The inbox grows on demand; the default 1024 slots would be most
		// of an idle actor's memory.
		actor.WithInboxSize(16),
		actor.WithMiddleware(m.recoverMiddleware(sessionID, e)))
	return e
}

// retire stops one incarnation of a session's actor once it has no work;
// the next send with spawn re-creates it. It acts on e only, never on
// whatever actor holds the session id now (a successor). A kick that
// reached the actor after this decision (rekick) re-creates it as soon as
// the old one and its log writer are gone.
func (m *Manager) retire(sessionID string, e *actorEntry) {
	m.mu.Lock()
	if m.actors[sessionID] != e || e.stopping {
		m.mu.Unlock()
		return
	}
	e.stopping = true
	// Added under mu while the entry turns stopping, so Stop (which waits
	// for every actor not yet stopping) never waits on a counter that may
	// still rise from zero.
	m.work.Add(1)
	m.mu.Unlock()
	done := m.engine.Poison(e.pid)
	go func() {
		defer m.work.Done()
		<-done.Done()
		<-e.writerDone
		m.mu.Lock()
		panicked := e.panicked
		m.mu.Unlock()
		if panicked {
			// The actor and its writer are gone: this is now the session's
			// only writer (D7), and no successor starts before it is done.
			m.recordFailure(sessionID)
			m.TestSignals.PanicRecorded.Signal(sessionID)
		}
		m.mu.Lock()
		if m.actors[sessionID] == e {
			delete(m.actors, sessionID)
		}
		rekick := e.rekick && !m.closing
		m.mu.Unlock()
		close(e.stopped)
		m.TestSignals.ActorRetired.Signal(sessionID)
		if rekick {
			m.Kick(sessionID)
		}
	}()
}

// markRekick records a kick that a retiring actor could not act on.
func (m *Manager) markRekick(e *actorEntry) {
	m.mu.Lock()
	e.rekick = true
	m.mu.Unlock()
}

// hasActor reports whether the session has an actor here (running or
// retiring).
func (m *Manager) hasActor(sessionID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.actors[sessionID] != nil
}

// LaggedSubscriptions counts live subscribers dropped for falling behind
// (they catch up from the log).
func (m *Manager) LaggedSubscriptions() int64 { return m.lagged.Load() }

// Live reports how many session actors run on this node.
func (m *Manager) Live() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.actors)
}

// Stop poisons every session actor and waits for them, then for
// background sandbox deletes, within ctx. Running execs keep running in
// their sandboxes (D4) and are re-attached by the next start.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	var waits []context.Context
	for _, e := range m.actors {
		if !e.stopping {
			e.stopping = true
			waits = append(waits, m.engine.Poison(e.pid))
		}
	}
	m.mu.Unlock()
	for _, w := range waits {
		select {
		case <-w.Done():
		case <-ctx.Done():
			m.bgStop()
			return ctx.Err()
		}
	}
	done := make(chan struct{})
	go func() { m.work.Wait(); m.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	m.bgStop()
	return ctx.Err()
}

// recoverMiddleware keeps a panic inside Receive from reaching the engine
// (go-deps §1 pitfall 1). The actor's state is suspect, so nothing more is
// decided by it: its work and writer are stopped (the writer drains what
// was queued), and once both are gone the session is marked failed by the
// retire path, before any successor incarnation can start (D7). Only this
// incarnation (e) is retired.
func (m *Manager) recoverMiddleware(sessionID string, e *actorEntry) actor.MiddlewareFunc {
	return func(next actor.ReceiveFunc) actor.ReceiveFunc {
		return func(c *actor.Context) {
			defer func() {
				if r := recover(); r != nil {
					m.log.Error("session actor panicked", slog.String("session", sessionID), slog.Any("panic", r))
					m.metrics.panics.Inc()
					if a, ok := c.Receiver().(*sessionActor); ok {
						a.panicked()
					}
					m.mu.Lock()
					e.panicked = true
					m.mu.Unlock()
					m.retire(sessionID, e)
				}
			}()
			next(c)
		}
	}
}

// internalFailure is what a session shows after a recovered panic.
const internalFailure = "turn failed: internal error in the session actor\n"

// failureOp records an internal failure: unfinished turns and the session
// become failed (never overwriting terminated), with a stderr event for the
// given turn when it is > 0.
func failureOp(sessionID string, turn int) *logOp {
	op := &logOp{updates: []persistence.Update{
		persistence.FailUnfinishedTurns(sessionID),
		persistence.SetSessionIfActive(sessionID, map[string]any{"status": persistence.StatusFailed, "exit_code": nil}),
	}}
	if turn > 0 {
		n := turn
		op.events = []*persistence.Event{{SessionID: sessionID, Turn: &n, Kind: persistence.KindOutput, Stream: "stderr", Data: internalFailure}}
	}
	return op
}

// recordFailure marks the session failed after a panic in Receive. It runs
// only once the panicked actor's writer is gone, so it is the session's
// single writer. The stderr event is added only to a turn that is still
// unfinished (an outcome the writer drained stays as it is).
func (m *Manager) recordFailure(sessionID string) {
	ctx, cancel := context.WithTimeout(m.bgCtx, 30*time.Second)
	defer cancel()
	turn := 0
	if t, err := m.deps.DB.TurnLatest(ctx, sessionID); err == nil &&
		(t.Status == persistence.StatusPending || t.Status == persistence.StatusRunning) {
		turn = t.TurnNumber
	}
	op := failureOp(sessionID, turn)
	if err := m.deps.DB.LogAppend(ctx, op.events, op.updates...); err != nil {
		m.log.Error("mark session failed", slog.String("session", sessionID), slog.String("error", err.Error()))
	}
}

// ErrNotRunning is returned by Publish when the session has no running turn.
var ErrNotRunning = errors.New("actors: session is not running")

// Publish appends data as one stdout output event of the session's current
// turn, through the same writer and fan-out as exec output (D19), and
// returns its event id.
func (m *Manager) Publish(ctx context.Context, sessionID, data string) (int64, error) {
	cmd := &publishCmd{data: data, reply: make(chan publishResult, 1)}
	if !m.send(sessionID, cmd, false) {
		return 0, ErrNotRunning
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case r := <-cmd.reply:
		return r.id, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
