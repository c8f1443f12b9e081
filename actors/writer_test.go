package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
)

// memLog is an in-memory LogAppend for writer tests: it assigns ids,
// records each committed batch and runs a hook that may fail or stall a
// call. Other Store methods are not used by the writer.
type memLog struct {
	Store // nil: only LogAppend is implemented

	mu      sync.Mutex
	nextID  int64
	batches [][]string // committed event data, per batch
	calls   int
	hook    func(call int, ctx context.Context) error
}

func (s *memLog) LogAppend(ctx context.Context, events []*persistence.Event, _ ...persistence.Update) error {
	s.mu.Lock()
	s.calls++
	call, hook := s.calls, s.hook
	s.mu.Unlock()
	if hook != nil {
		if err := hook(call, ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var batch []string
	for _, e := range events {
		s.nextID++
		e.ID = s.nextID
		batch = append(batch, e.Data)
	}
	s.batches = append(s.batches, batch)
	return nil
}

func (s *memLog) committed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

func (s *memLog) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// writerBundle runs a logWriter over a memLog.
type writerBundle struct {
	w         *logWriter
	store     *memLog
	durable   chan []*persistence.Event
	abandoned chan error
	cancel    context.CancelFunc
	done      chan struct{}
}

func startWriter(t *testing.T, store *memLog, queue int, budget time.Duration) *writerBundle {
	return startWriterBatch(t, store, queue, 256, budget)
}

func startWriterBatch(t *testing.T, store *memLog, queue, batchMax int, budget time.Duration) *writerBundle {
	t.Helper()
	b := &writerBundle{store: store, durable: make(chan []*persistence.Event, 1024), abandoned: make(chan error, 1), done: make(chan struct{})}
	b.w = newLogWriter(store, slog.New(slog.DiscardHandler), queue, batchMax, func(events []*persistence.Event, _ []any) {
		b.durable <- events
	})
	b.w.budget = budget
	b.w.onAbandon = func(err error) { b.abandoned <- err }
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	go func() {
		defer close(b.done)
		b.w.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-b.done
	})
	return b
}

func op(data string) *logOp {
	return &logOp{events: []*persistence.Event{{SessionID: "s", Kind: persistence.KindOutput, Stream: "stdout", Data: data}}}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func recvErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

func TestWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CommitInOrder", func(t *testing.T) {
		t.Parallel()
		b := startWriter(t, &memLog{}, 8, time.Second)
		for i := range 20 {
			require.NoError(t, b.w.submit(ctx, op(fmt.Sprint(i))))
		}
		last := op("last")
		require.NoError(t, b.w.submitWait(ctx, last))
		require.Positive(t, last.events[0].ID)
		var got []string
		var prev int64
		for len(got) < 21 {
			for _, e := range <-b.durable {
				require.Greater(t, e.ID, prev, "ids increase")
				prev = e.ID
				got = append(got, e.Data)
			}
		}
		require.Equal(t, b.store.committed(), got)
		require.Equal(t, "last", got[20])
		for i := range 20 {
			require.Equal(t, fmt.Sprint(i), got[i])
		}
	})

	t.Run("RetryTransientThenCommitOnce", func(t *testing.T) {
		t.Parallel()
		store := &memLog{hook: func(call int, _ context.Context) error {
			if call <= 2 {
				return errInjected
			}
			return nil
		}}
		b := startWriter(t, store, 8, 10*time.Second)
		require.NoError(t, b.w.submitWait(ctx, op("x")))
		require.Equal(t, []string{"x"}, store.committed(), "committed exactly once after the retries")
		require.Equal(t, 3, store.callCount())
		require.Empty(t, b.abandoned)
	})

	// AbandonStopsTheWriter is defect 2: when a batch cannot be committed
	// within the budget, nothing after it may be committed (its stored
	// offsets would cover the lost bytes). The old writer reported the
	// batch as done and went on with the next one.
	t.Run("AbandonStopsTheWriter", func(t *testing.T) {
		t.Parallel()
		var failing sync.Mutex
		down := true
		store := &memLog{hook: func(int, context.Context) error {
			failing.Lock()
			defer failing.Unlock()
			if down {
				return errInjected
			}
			return nil
		}}
		b := startWriter(t, store, 8, 300*time.Millisecond)
		first := op("lost")
		errc := make(chan error, 1)
		go func() { errc <- b.w.submitWait(ctx, first) }()
		var abandonErr error
		select {
		case abandonErr = <-b.abandoned:
		case <-time.After(10 * time.Second):
			t.Fatal("the writer never gave up on the batch")
		}
		require.ErrorIs(t, abandonErr, errInjected)
		require.Error(t, recvErr(t, errc, "the producer's answer"), "the producer learns that its op is not durable")
		failing.Lock()
		down = false
		failing.Unlock()
		waitClosed(t, b.done, "the writer to stop")
		require.ErrorIs(t, b.w.submit(ctx, op("after")), errWriterStopped)
		require.ErrorIs(t, b.w.submitWait(ctx, op("after2")), errWriterStopped)
		require.Empty(t, store.committed(), "nothing is committed after an abandoned batch")
		require.Empty(t, b.durable)
	})

	t.Run("AbandonAnswersQueuedOps", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		store := &memLog{hook: func(_ int, ctx context.Context) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errInjected
		}}
		b := startWriter(t, store, 8, 200*time.Millisecond)
		errs := make(chan error, 3)
		require.NoError(t, b.w.submit(ctx, op("a"))) // stalls in LogAppend
		for _, d := range []string{"b", "c"} {
			o := op(d)
			go func() { errs <- b.w.submitWait(ctx, o) }()
		}
		recvErr(t, b.abandoned, "the abandon")
		close(release)
		for range 2 {
			select {
			case err := <-errs:
				require.Error(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("a producer waits forever on an abandoned writer")
			}
		}
		waitClosed(t, b.done, "the writer to stop")
		require.Empty(t, store.committed())
	})

	t.Run("PermanentErrorIsNotRetried", func(t *testing.T) {
		t.Parallel()
		store := &memLog{hook: func(int, context.Context) error {
			return fmt.Errorf("append: %w", &pgconn.PgError{Code: "23503", Message: "violates foreign key constraint"})
		}}
		b := startWriter(t, store, 8, time.Minute)
		require.Error(t, b.w.submitWait(ctx, op("x")))
		recvErr(t, b.abandoned, "the abandon")
		require.Equal(t, 1, store.callCount(), "a deleted session is not retried for a minute")
	})

	t.Run("StallIsBoundedByTheBudget", func(t *testing.T) {
		t.Parallel()
		store := &memLog{hook: func(_ int, ctx context.Context) error {
			<-ctx.Done() // a database that never answers
			return ctx.Err()
		}}
		b := startWriter(t, store, 8, 200*time.Millisecond)
		start := time.Now()
		err := b.w.submitWait(ctx, op("x"))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 5*time.Second)
		require.ErrorIs(t, recvErr(t, b.abandoned, "the abandon"), context.DeadlineExceeded)
	})

	// DrainOrder: on stop, what was queued is committed in order; the
	// first failure ends the drain (the old drain went on past a failed
	// batch, leaving a hole).
	t.Run("DrainInOrderStopsAtFirstFailure", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		store := &memLog{hook: func(call int, ctx context.Context) error {
			switch call {
			case 1:
				<-release // hold the first batch so the rest queues up
			case 3:
				return fmt.Errorf("append: %w", &pgconn.PgError{Code: "23503"})
			}
			return nil
		}}
		b := startWriterBatch(t, store, 64, 1, time.Second) // one op per batch: calls 1..6 are ops 0..5
		require.NoError(t, b.w.submit(ctx, op("0")))
		for i := 1; i <= 5; i++ {
			require.NoError(t, b.w.submit(ctx, op(fmt.Sprint(i))))
		}
		b.cancel()
		close(release)
		waitClosed(t, b.done, "the drain")
		require.Equal(t, []string{"0", "1"}, store.committed(),
			"drained in submission order, and nothing after the failed batch")
	})
}

func TestWriterSubmitAfterStop(t *testing.T) {
	t.Parallel()
	b := startWriter(t, &memLog{}, 1, time.Second)
	b.cancel()
	waitClosed(t, b.done, "the writer to stop")
	err := b.w.submit(context.Background(), op("x"))
	require.True(t, errors.Is(err, errWriterStopped))
}
