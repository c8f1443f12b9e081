package actors

import (
	"context"
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

// maxCommitAttempts bounds the retries of one batch (backoff 0.1 s tripling,
// capped at 5 s: about a minute in all).
const maxCommitAttempts = 15

type turnOffsets struct {
	turnID         int64
	stdout, stderr int64
}

// logWriter is a session's single log writer (D7). Producers submit ops
// through a bounded channel: when the database falls behind, submit blocks
// and reading from the sandbox slows down; nothing is dropped. Each batch
// of queued ops is committed in one transaction (group commit), then
// reported to the session actor, which fans the events out.
type logWriter struct {
	db        *persistence.DB
	log       *slog.Logger
	ch        chan *logOp
	batchMax  int
	onDurable func(events []*persistence.Event, notes []any)
	stopped   chan struct{}
	metrics   *metrics
	// bytes, when set, bounds the event bytes queued (backpressure in
	// bytes as well as in ops).
	bytes *byteGate
}

func newLogWriter(db *persistence.DB, log *slog.Logger, queue, batchMax int, onDurable func([]*persistence.Event, []any)) *logWriter {
	return &logWriter{
		db: db, log: log, ch: make(chan *logOp, queue), batchMax: batchMax,
		onDurable: onDurable, stopped: make(chan struct{}),
	}
}

// submit queues op, blocking while the queue is full, in ops or in bytes
// (backpressure).
func (w *logWriter) submit(ctx context.Context, op *logOp) error {
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
	}
}

// run commits batches until ctx ends, then drains what is already queued.
func (w *logWriter) run(ctx context.Context) {
	defer close(w.stopped)
	for {
		var first *logOp
		select {
		case first = <-w.ch:
		case <-ctx.Done():
			w.drain()
			return
		}
		if ctx.Err() != nil {
			// Stopping: this op was already queued; commit it with the rest.
			w.drainFrom(first)
			return
		}
		w.commit(ctx, w.collect(first))
	}
}

// drainFrom commits first and everything still queued, then returns.
func (w *logWriter) drainFrom(first *logOp) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.commit(ctx, w.collect(first))
	w.drainCtx(ctx)
}

// drain commits whatever producers queued before the writer was stopped,
// with a bounded effort.
func (w *logWriter) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.drainCtx(ctx)
}

func (w *logWriter) drainCtx(ctx context.Context) {
	for {
		select {
		case op := <-w.ch:
			w.commit(ctx, w.collect(op))
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

// commit appends one batch, retrying with backoff while ctx lives: a
// database hiccup delays output, it does not lose it.
//
// A committed batch's bytes stay held in the writer's budget until the
// session actor has fanned it out (it releases batchBytes(events), which is
// what the ops acquired): batches in flight to a busy actor count too.
func (w *logWriter) commit(ctx context.Context, batch []*logOp) {
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
	var err error
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		for _, e := range events {
			e.ID = 0 // a rolled-back insert may have filled them in
		}
		if err = w.db.LogAppend(ctx, events, updates...); err == nil {
			break
		}
		// A dead context, a deleted session (foreign key) or a database that
		// stays down for about a minute end the retries.
		if ctx.Err() != nil || persistence.IsPermanent(err) || attempt >= maxCommitAttempts {
			break
		}
		w.log.Warn("session log append failed; retrying", slog.String("error", err.Error()), slog.Duration("in", backoff))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*3, 5*time.Second)
	}
	for _, op := range batch {
		if op.done != nil {
			op.done <- err
		}
	}
	if err != nil {
		w.log.Error("session log append abandoned", slog.String("error", err.Error()), slog.Int("events", len(events)))
		// The notes still reach the actor, so it can finish and retire.
		w.releaseOps(batch...)
		w.onDurable(nil, notes)
		return
	}
	if w.metrics != nil && len(events) > 0 {
		w.metrics.eventsLogged.Add(float64(len(events)))
		w.metrics.logBatches.Observe(float64(len(events)))
	}
	w.onDurable(events, notes)
}
