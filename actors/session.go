package actors

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/anthdm/hollywood/actor"

	"github.com/aodhq/aod/persistence"
)

// phase is what a session actor is doing.
type phase int

const (
	phaseLoading phase = iota
	phaseIdle
	phaseProvisioning
	phaseTurn
)

// sessionActor owns one live session on this node: its sandbox handle,
// turn state, running exec and the fan-out of durable events to live
// subscribers. Receive never blocks on I/O: loading, provisioning, turns and
// the log writer run in goroutines that report back by message.
type sessionActor struct {
	m     *Manager
	id    string
	pid   *actor.PID
	entry *actorEntry // this incarnation's manager entry (gen, writerDone)

	ctx    context.Context // work context, cancelled on stop
	cancel context.CancelFunc
	writer *logWriter

	phase      phase
	session    *persistence.Session
	turn       int // the running turn's number
	lastID     int64
	subs       map[*Subscription]struct{}
	pendingSub []*Subscription // subscribers waiting for the first load
	// recent holds the newest durable events (bounded in bytes): every
	// event with an id above recentFrom, so a subscriber whose cursor is
	// at or above recentFrom starts from memory instead of the log.
	recent      []*persistence.Event
	recentBytes int64
	recentFrom  int64

	workCancel context.CancelFunc // cancels provisioning or the turn
	run        *turnRun           // the running turn (publishes go through it)
	execID     string
	reload     bool // a kick arrived while busy: look for work again after
	terminated bool // a terminate arrived: start nothing new
	retiring   bool // the actor asked to stop: it starts nothing new
	stopped    bool

	// writerRunning: the writer goroutine was started (it closes
	// entry.writerDone).
	writerRunning bool
}

func newSessionActor(m *Manager, id string, entry *actorEntry) actor.Producer {
	return func() actor.Receiver {
		return &sessionActor{m: m, id: id, entry: entry, subs: map[*Subscription]struct{}{}}
	}
}

// stale reports a message from a goroutine of a previous incarnation of this
// session's actor (same PID id, different actor).
func (a *sessionActor) stale(gen uint64) bool { return gen != a.entry.gen }

// Receive dispatches one message.
func (a *sessionActor) Receive(c *actor.Context) {
	switch msg := c.Message().(type) {
	case actor.Started:
		a.started(c)
	case actor.Stopped:
		a.shutdown()
	case *loadState:
		a.load()
	case *stateLoaded:
		if !a.stale(msg.gen) {
			a.loaded(msg)
		}
	case *kick:
		a.onKick()
	case *durable:
		if !a.stale(msg.gen) {
			a.writer.bytes.release(msg.held)
			a.onDurable(msg)
		}
	case *subscribeCmd:
		a.subscribe(msg.sub)
	case *unsubscribeCmd:
		a.unsubscribe(msg.sub)
	case *attachCmd:
		a.attach(msg)
	case *terminateCmd:
		a.terminate()
	case *execStarted:
		if !a.stale(msg.gen) {
			a.execID = msg.execID
		}
	case *publishCmd:
		a.publish(msg)
	case *writerAbandoned:
		if !a.stale(msg.gen) {
			a.onWriterAbandoned(msg.err)
		}
	case *workPanicked:
		if a.stale(msg.gen) {
			return
		}
		a.m.log.Error("session work panicked", slog.String("session", a.id), slog.String("panic", msg.reason))
		a.m.metrics.panics.Inc()
		a.failWork()
	}
}

func (a *sessionActor) started(c *actor.Context) {
	a.pid = c.PID()
	a.ctx, a.cancel = context.WithCancel(context.Background())
	engine, pid, gen := c.Engine(), c.PID(), a.entry.gen
	a.writer = newLogWriter(a.m.deps.DB, a.m.log.With(slog.String("session", a.id)),
		a.m.deps.Config.WriterQueue, a.m.deps.Config.BatchMax,
		func(events []*persistence.Event, notes []any) {
			engine.Send(pid, &durable{gen: gen, events: events, notes: notes, held: batchBytes(events)})
		})
	a.writer.metrics = a.m.metrics
	a.writer.signals = &a.m.TestSignals
	a.writer.budget = a.m.deps.Config.CommitBudget
	cancel := a.cancel
	a.writer.onAbandon = func(err error) {
		// Stop the work first, as a node shutdown does, so it records no
		// outcome; then tell the actor to retire.
		cancel()
		engine.Send(pid, &writerAbandoned{gen: gen, err: err})
	}
	a.writer.bytes = newByteGate(a.m.deps.Config.WriterQueueBytes)
	a.m.work.Add(1)
	a.writerRunning = true
	go func() {
		defer a.m.work.Done()
		defer close(a.entry.writerDone)
		a.writer.run(a.ctx)
	}()
	// Load outside Started: Started runs inside Spawn on the caller's
	// goroutine (go-deps §1).
	engine.Send(pid, &loadState{})
}

// panicked stops everything after a recovered panic in Receive: no new
// work, the running work and the writer are cancelled (the writer drains
// what was queued and closes writerDone), subscribers are released. The
// manager records the failure once the writer is gone.
func (a *sessionActor) panicked() {
	defer func() {
		if r := recover(); r != nil {
			a.m.log.Error("session actor cleanup after a panic panicked", slog.String("session", a.id), slog.Any("panic", r))
		}
	}()
	a.retiring = true
	a.reload = false
	if !a.writerRunning {
		// The panic came before the writer started: nobody else closes it.
		a.writerRunning = true
		close(a.entry.writerDone)
	}
	if a.workCancel != nil {
		a.workCancel()
		a.workCancel = nil
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.closeSubs(false)
}

// shutdown runs on Stopped (possibly twice, hollywood #196).
func (a *sessionActor) shutdown() {
	if a.stopped {
		return
	}
	a.stopped = true
	// The actor's context first: the work context derives from it, so work
	// that sees its context end can tell a stop (abandon, the exec keeps
	// running) from a terminate (the work context alone: kill the exec).
	// Cancelling the work context first let a turn read a node stop as a
	// terminate and kill its agent.
	if a.cancel != nil {
		a.cancel()
	}
	if a.workCancel != nil {
		a.workCancel()
	}
	a.closeSubs(false)
}

// load reads the session and its latest turn in a goroutine.
func (a *sessionActor) load() {
	a.phase = phaseLoading
	engine, pid, db, id, gen := a.m.engine, a.pid, a.m.deps.DB, a.id, a.entry.gen
	a.goTracked(func() {
		ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
		defer cancel()
		msg := &stateLoaded{gen: gen}
		msg.session, msg.err = db.SessionGet(ctx, 0, id)
		if msg.err == nil {
			msg.turn, msg.err = db.TurnLatest(ctx, id)
		}
		if msg.err == nil {
			var last []persistence.Event
			last, msg.err = db.EventsLast(ctx, id)
			if len(last) > 0 {
				msg.lastID = last[0].ID
			}
		}
		engine.Send(pid, msg)
	})
}

func (a *sessionActor) loaded(msg *stateLoaded) {
	if a.retiring {
		// Decided to stop meanwhile (a panic, an abandoned log): start
		// nothing; a successor loads again.
		a.answerPending(false)
		return
	}
	if msg.err != nil {
		// Deleted, or the database is unavailable: nothing to run.
		a.m.log.Debug("session actor load", slog.String("session", a.id), slog.String("error", msg.err.Error()))
		a.phase = phaseIdle
		a.answerPending(false)
		a.retire()
		return
	}
	a.session = msg.session
	if msg.lastID > a.lastID {
		a.lastID = msg.lastID
	}
	if len(a.recent) == 0 {
		// Nothing committed by this incarnation yet: the window starts
		// at the log's end as loaded.
		a.recentFrom = a.lastID
	}
	s, t := msg.session, msg.turn
	a.m.log.Debug("session actor loaded", slog.String("session", a.id), slog.String("status", s.Status),
		slog.Int("turn", t.TurnNumber), slog.String("turn_status", t.Status), slog.Bool("provisioned", s.ProvisionedAt != nil))
	if a.terminated {
		s.Status = persistence.StatusTerminated
	}
	switch {
	case s.Status == persistence.StatusPending && s.ProvisionedAt == nil:
		a.startProvisioning(t)
	case s.Status == persistence.StatusPending && t.Status == persistence.StatusPending:
		a.startTurn(t, false)
	case s.Status == persistence.StatusRunning || (s.Status == persistence.StatusPending && t.Status == persistence.StatusRunning):
		a.startTurn(t, true)
	default:
		a.phase = phaseIdle
	}
	if a.phase == phaseIdle && a.reload {
		// A kick arrived while this load was in flight: look again.
		a.reload = false
		a.load()
		return
	}
	a.answerPending(a.phase != phaseIdle)
	if a.phase == phaseIdle {
		a.retire()
	}
}

// retire asks the manager to stop this actor; from now on it starts nothing.
func (a *sessionActor) retire() {
	a.retiring = true
	a.m.retire(a.id, a.entry)
}

func (a *sessionActor) answerPending(live bool) {
	for _, sub := range a.pendingSub {
		a.admit(sub, live)
	}
	a.pendingSub = nil
}

func (a *sessionActor) admit(sub *Subscription, live bool) {
	if live {
		a.subs[sub] = struct{}{}
	}
	sub.ready <- subscribeResult{live: live, lastID: a.lastID}
}

func (a *sessionActor) subscribe(sub *Subscription) {
	if a.retiring {
		a.admit(sub, false)
		return
	}
	switch a.phase {
	case phaseLoading:
		a.pendingSub = append(a.pendingSub, sub)
	case phaseIdle:
		a.admit(sub, false)
	default:
		a.admit(sub, true)
	}
}

func (a *sessionActor) unsubscribe(sub *Subscription) {
	if _, ok := a.subs[sub]; ok {
		delete(a.subs, sub)
		sub.end(false)
		a.subscriberGone(false)
	}
	for i, p := range a.pendingSub {
		if p == sub {
			a.pendingSub = append(a.pendingSub[:i], a.pendingSub[i+1:]...)
			sub.ready <- subscribeResult{}
			a.subscriberGone(false)
			break
		}
	}
}

// subscriberGone reports a subscriber this actor released before its work
// ended: unsubscribed by its client, or dropped as lagged.
func (a *sessionActor) subscriberGone(lagged bool) {
	if !lagged {
		a.m.TestSignals.SubscriberGone.Signal(a.id)
	}
	if hook := a.m.deps.Config.SubscriberGone; hook != nil {
		hook(a.id, lagged)
	}
}

// attach admits a subscriber for userID's session while its work runs,
// queueing first the events after its cursor that the actor still holds.
// Otherwise (no work, another user's session, a cursor older than the
// window) it answers not live and the caller falls back to the log.
func (a *sessionActor) attach(cmd *attachCmd) {
	sub := cmd.sub
	if a.retiring || a.terminated || a.session == nil || a.session.UserID != cmd.userID ||
		(a.phase != phaseTurn && a.phase != phaseProvisioning) {
		sub.ready <- subscribeResult{}
		return
	}
	res := subscribeResult{live: true, lastID: a.lastID, provider: a.session.Provider, runtime: a.session.Runtime}
	if cmd.after >= a.recentFrom {
		var backlog []*persistence.Event
		for _, e := range a.recent {
			if e.ID > cmd.after {
				backlog = append(backlog, e)
			}
		}
		res.covered = len(backlog) == 0 || sub.push(backlog, batchBytes(backlog))
	}
	a.subs[sub] = struct{}{}
	sub.ready <- res
}

// remember keeps a committed batch in the recent window, dropping the
// oldest events beyond Config.RecentBytes.
func (a *sessionActor) remember(events []*persistence.Event) {
	limit := a.m.deps.Config.RecentBytes
	for _, e := range events {
		a.recent = append(a.recent, e)
		a.recentBytes += int64(len(e.Data)) + eventOverhead
	}
	drop := 0
	for drop < len(a.recent) && a.recentBytes > limit {
		e := a.recent[drop]
		a.recentBytes -= int64(len(e.Data)) + eventOverhead
		a.recentFrom = e.ID
		drop++
	}
	if drop > 0 {
		a.recent = append([]*persistence.Event(nil), a.recent[drop:]...)
	}
}

// onKick: a new session or turn was queued in the database.
func (a *sessionActor) onKick() {
	if a.retiring {
		// Too late for this actor: its successor picks the work up.
		a.m.markRekick(a.entry)
		return
	}
	switch a.phase {
	case phaseIdle:
		a.load()
	case phaseLoading:
		// The load in flight reads the new state or a later kick follows.
		a.reload = true
	default:
		a.reload = true
	}
}

// onDurable fans committed events out to live subscribers without
// blocking: a subscriber whose queue would exceed its budget (batches or
// bytes) is dropped as lagged and catches up from the log.
func (a *sessionActor) onDurable(msg *durable) {
	if n := len(msg.events); n > 0 {
		if last := msg.events[n-1].ID; last > a.lastID {
			a.lastID = last
		}
		a.remember(msg.events)
		var size int64
		if len(a.subs) > 0 {
			size = batchBytes(msg.events)
		}
		for sub := range a.subs {
			if !sub.push(msg.events, size) {
				delete(a.subs, sub)
				sub.end(true)
				a.m.lagged.Add(1)
				a.m.metrics.lagged.Inc()
				a.subscriberGone(true)
			}
		}
	}
	for _, note := range msg.notes {
		switch note.(type) {
		case *provisioned:
			a.workCancel = nil
			if a.terminated {
				a.finishWork()
				continue
			}
			a.phase = phaseIdle
			a.load() // picks up the pending turn
		case *workFinished:
			a.finishWork()
		}
	}
}

// finishWork ends the current provisioning or turn: subscribers are told
// the stream is complete, and the actor stops unless more work is queued.
func (a *sessionActor) finishWork() {
	if a.workCancel != nil {
		a.workCancel()
		a.workCancel = nil
	}
	a.execID = ""
	a.run = nil
	a.phase = phaseIdle
	a.closeSubs(false)
	if a.reload && !a.terminated {
		a.reload = false
		a.load()
		return
	}
	a.retire()
}

func (a *sessionActor) closeSubs(lagged bool) {
	for sub := range a.subs {
		sub.end(lagged)
		delete(a.subs, sub)
	}
	for _, sub := range a.pendingSub {
		sub.ready <- subscribeResult{}
	}
	a.pendingSub = nil
}

// terminate stops provisioning or the running exec; the sandbox itself is
// destroyed by the manager.
func (a *sessionActor) terminate() {
	a.terminated = true
	if a.session != nil {
		a.session.Status = persistence.StatusTerminated
	}
	a.reload = false
	if a.phase == phaseTurn && a.execID != "" && a.session != nil {
		backend, handle, execID := a.m.deps.Backend, a.session.BackendHandle, a.execID
		a.goTracked(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = backend.Kill(ctx, handle, execID, "KILL")
		})
	}
	if a.workCancel != nil {
		a.workCancel()
	}
}

// goTracked runs fn in a goroutine that the manager's Stop waits for. It is
// called from Receive only: every Add then happens while this actor is
// alive and not yet waited for, or while its retire goroutine holds a count,
// so Stop's Wait never races an Add from zero.
func (a *sessionActor) goTracked(fn func()) {
	a.m.work.Add(1)
	go func() {
		defer a.m.work.Done()
		fn()
	}()
}

// goWork runs fn in a goroutine; a panic becomes workPanicked.
func (a *sessionActor) goWork(fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(a.ctx)
	a.workCancel = cancel
	engine, pid, gen := a.m.engine, a.pid, a.entry.gen
	a.m.work.Add(1)
	go func() {
		defer a.m.work.Done()
		defer func() {
			if r := recover(); r != nil {
				engine.Send(pid, &workPanicked{gen: gen, reason: fmt.Sprintf("%v\n%s", r, debug.Stack())})
			}
		}()
		fn(ctx)
	}()
}

func (a *sessionActor) startProvisioning(t *persistence.Turn) {
	a.phase = phaseProvisioning
	a.turn = t.TurnNumber
	s := *a.session
	a.goWork(func(ctx context.Context) { a.provision(ctx, &s, t) })
}

func (a *sessionActor) startTurn(t *persistence.Turn, recovering bool) {
	a.phase = phaseTurn
	a.turn = t.TurnNumber
	s := *a.session
	r := a.newTurnRun(&s, t)
	a.run = r
	a.goWork(func(ctx context.Context) { r.run(ctx, recovering) })
}

// publish appends an output event through the running turn without
// blocking the actor: the submit runs in a goroutine that answers the
// caller.
func (a *sessionActor) publish(cmd *publishCmd) {
	r := a.run
	if a.retiring || a.terminated || a.phase != phaseTurn || r == nil || a.session == nil || a.session.Status == persistence.StatusTerminated {
		cmd.reply <- publishResult{err: ErrNotRunning}
		return
	}
	n := a.turn
	ev := &persistence.Event{SessionID: a.id, Turn: &n, Kind: persistence.KindOutput, Stream: "stdout", Data: sanitize([]byte(cmd.data))}
	ctx := a.ctx
	a.goTracked(func() {
		// Through the turn, so it is refused once the turn's finish is
		// queued and never commits after it.
		err := r.publish(ctx, ev)
		cmd.reply <- publishResult{id: ev.ID, err: err}
	})
}

// onWriterAbandoned: the log writer could not commit a batch and stopped,
// having already cancelled the work context. Nothing more of this run can
// become durable, so the actor ends its work without an outcome and retires;
// the reconciler kicks the session again (the turn re-attaches from the
// last committed offsets). Subscribers catch up from the log.
func (a *sessionActor) onWriterAbandoned(err error) {
	a.m.log.Warn("session work stopped: its log could not be written; it resumes from the last committed events",
		slog.String("session", a.id), slog.String("error", err.Error()))
	if a.workCancel != nil {
		a.workCancel()
		a.workCancel = nil
	}
	a.execID = ""
	a.phase = phaseIdle
	a.reload = false
	a.closeSubs(true)
	if !a.retiring {
		a.retire()
	}
}

// failWork records an internal failure of the current work through the
// session's writer (ordered after its queued events), then ends the work.
func (a *sessionActor) failWork() {
	if a.workCancel != nil {
		a.workCancel()
		a.workCancel = nil
	}
	op := failureOp(a.id, a.turn)
	op.note = &workFinished{}
	w, ctx := a.writer, a.ctx
	a.goTracked(func() { _ = w.submit(ctx, op) })
}
