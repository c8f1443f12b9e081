package actors

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aodhq/aod/persistence"
)

// logOp is one unit of work for a session's log writer: events to append
// and state updates to apply after them, atomically.
type logOp struct {
	events  []*persistence.Event
	updates []persistence.Update
	// offsets, when set, records how many raw bytes of each stream of the
	// running turn are now in the log (coalesced: the last one wins).
	offsets *turnOffsets
	// note is sent to the session actor once this op is durable.
	note any
	// done, when set, receives the commit result.
	done chan error
	// size is what the op holds of the writer's byte budget:
	// batchBytes(events).
	size int64
}

// Commit retry defaults: backoff 0.1 s tripling, capped at 5 s, within a
// budget of about a minute per batch.
const (
	defaultCommitBudget = 54 * time.Second
	commitBackoffMin    = 100 * time.Millisecond
	commitBackoffMax    = 5 * time.Second
	// drainBudget bounds the commit of what is queued when the writer stops.
	drainBudget = 10 * time.Second
)

type turnOffsets struct {
	turnID         int64
	stdout, stderr int64
}

// logWriter is a session's single log writer (D7). Producers submit ops
// through a bounded channel: when the database falls behind, submit blocks
// and reading from the sandbox slows down; nothing is dropped. Each batch
// of queued ops is committed in one transaction (group commit), then
// reported to the session actor, which fans the events out.
//
// Never drop and continue: a batch that cannot be committed within the
// retry budget (or fails permanently) stops the writer. It commits nothing
// after it, answers every waiting producer with an error and calls
// onAbandon, which stops the session's work without recording an outcome,
// as a node shutdown does. The durable offsets are then those of the last
// committed batch, so the reconciler's next kick re-attaches the turn and
// re-reads the missing bytes exactly once (D5).
type logWriter struct {
	db        Store
	log       *slog.Logger
	ch        chan *logOp
	batchMax  int
	budget    time.Duration
	onDurable func(events []*persistence.Event, notes []any)
	// onAbandon is called once, before stopped is closed, when a batch could
	// not be committed.
	onAbandon func(err error)
	stopped   chan struct{}
	metrics   *metrics
	signals   *TestSignals
	// bytes, when set, bounds the event bytes queued (backpressure in
	// bytes as well as in ops).
	bytes *byteGate
}

func newLogWriter(db Store, log *slog.Logger, queue, batchMax int, onDurable func([]*persistence.Event, []any)) *logWriter {
	return &logWriter{
		db: db, log: log, ch: make(chan *logOp, queue), batchMax: batchMax, budget: defaultCommitBudget,
		onDurable: onDurable, onAbandon: func(error) {}, stopped: make(chan struct{}),
	}
}

// submit queues op, blocking while the queue is full, in ops or in bytes
// (backpressure).
func (w *logWriter) submit(ctx context.Context, op *logOp) error {
	select {
	case <-w.stopped:
		return errWriterStopped
	default:
	}
	if w.bytes != nil {
		op.size = batchBytes(op.events)
		if err := w.bytes.acquire(ctx, w.stopped, op.size); err != nil {
			return err
		}
	}
	select {
	case w.ch <- op:
		return nil
	case <-ctx.Done():
		w.releaseOps(op)
		return ctx.Err()
	case <-w.stopped:
		w.releaseOps(op)
		return errWriterStopped
	}
}

// releaseOps returns the ops' share of the byte budget.
func (w *logWriter) releaseOps(ops ...*logOp) {
	if w.bytes == nil {
		return
	}
	var n int64
	for _, op := range ops {
		n += op.size
		op.size = 0
	}
	w.bytes.release(n)
}

// submitWait queues op and waits until it is durable.
func (w *logWriter) submitWait(ctx context.Context, op *logOp) error {
	op.done = make(chan error, 1)
	if err := w.submit(ctx, op); err != nil {
		return err
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-w.stopped:
		// Answers are sent before stopped is closed.
		select {
		case err := <-op.done:
			return err
		default:
			return errWriterStopped
		}
	}
}

// run commits batches until ctx ends, then drains what is already queued.
// It returns early, without committing anything more, when a batch fails.
func (w *logWriter) run(ctx context.Context) {
	defer close(w.stopped)
	for {
		var first *logOp
		select {
		case first = <-w.ch:
		case <-ctx.Done():
			w.drain(nil)
			return
		}
		if ctx.Err() != nil {
			// Stopping: this op was already queued; commit it with the rest.
			w.drain(first)
			return
		}
		if err := w.commit(ctx, w.collect(first)); err != nil {
			w.abandon(err)
			return
		}
	}
}

// drain commits first (if any) and whatever producers queued before the
// writer was stopped, within drainBudget, stopping at the first failure.
func (w *logWriter) drain(first *logOp) {
	ctx, cancel := context.WithTimeout(context.Background(), drainBudget)
	defer cancel()
	for {
		if first == nil {
			select {
			case first = <-w.ch:
			default:
				return
			}
		}
		if err := w.commit(ctx, w.collect(first)); err != nil {
			w.abandon(err)
			return
		}
		first = nil
	}
}

// abandon answers every op still queued, so no producer waits on a writer
// that is gone, and reports the failure.
func (w *logWriter) abandon(err error) {
	w.log.Error("session log append abandoned; stopping the session's work until it is resumed", slog.String("error", err.Error()))
	w.onAbandon(err)
	if w.metrics != nil {
		w.metrics.logAbandoned.Inc()
	}
	if w.signals != nil {
		w.signals.BatchAbandoned.Signal(err)
	}
	for {
		select {
		case op := <-w.ch:
			w.releaseOps(op)
			if op.done != nil {
				op.done <- errWriterStopped
			}
		default:
			return
		}
	}
}

// collect takes first plus whatever else is queued, up to batchMax events.
func (w *logWriter) collect(first *logOp) []*logOp {
	batch := []*logOp{first}
	n := len(first.events)
	for n < w.batchMax {
		select {
		case op := <-w.ch:
			batch = append(batch, op)
			n += len(op.events)
		default:
			return batch
		}
	}
	return batch
}

// commit appends one batch, retrying transient errors with backoff within
// the writer's budget: a database hiccup delays output, it does not lose
// it. It returns the error that ended the retries (ctx ended, a permanent
// error such as a deleted session, or the budget ran out); then nothing of
// the batch is durable.
//
// A committed batch's bytes stay held in the writer's budget until the
// session actor has fanned it out (it releases batchBytes(events), which is
// what the ops acquired): batches in flight to a busy actor count too.
func (w *logWriter) commit(ctx context.Context, batch []*logOp) error {
	var events []*persistence.Event
	var updates []persistence.Update
	var notes []any
	var off *turnOffsets
	for _, op := range batch {
		events = append(events, op.events...)
		updates = append(updates, op.updates...)
		if op.offsets != nil {
			off = op.offsets
		}
		if op.note != nil {
			notes = append(notes, op.note)
		}
	}
	if off != nil {
		updates = append([]persistence.Update{persistence.SetTurn(off.turnID, map[string]any{
			"stdout_offset": off.stdout, "stderr_offset": off.stderr,
		})}, updates...)
	}
	bctx, cancel := context.WithTimeout(ctx, w.budget)
	defer cancel()
	var err error
	backoff := commitBackoffMin
	for attempt := 1; ; attempt++ {
		for _, e := range events {
			e.ID = 0 // a rolled-back insert may have filled them in
		}
		if err = w.db.LogAppend(bctx, events, updates...); err == nil {
			break
		}
		if bctx.Err() != nil || persistence.IsPermanent(err) {
			break
		}
		w.log.Warn("session log append failed; retrying", slog.String("error", err.Error()),
			slog.Int("attempt", attempt), slog.Duration("in", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-bctx.Done():
			t.Stop()
		}
		if bctx.Err() != nil {
			break
		}
		backoff = min(backoff*3, commitBackoffMax)
	}
	for _, op := range batch {
		if op.done != nil {
			op.done <- err
		}
	}
	if err != nil {
		w.releaseOps(batch...)
		return fmt.Errorf("commit %d events: %w", len(events), err)
	}
	if w.metrics != nil && len(events) > 0 {
		w.metrics.eventsLogged.Add(float64(len(events)))
		w.metrics.logBatches.Observe(float64(len(events)))
	}
	w.onDurable(events, notes)
	return nil
}
