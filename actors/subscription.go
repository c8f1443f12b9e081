package actors

import (
	"sync"

	"github.com/aodhq/aod/persistence"
)

// eventOverhead is what one queued event costs besides its data (the
// struct, its strings' headers, its share of the encoded frame): the
// subscriber budget counts it so that many tiny events are bounded too.
const eventOverhead = 160

// batchBytes is the budget cost of one committed batch.
func batchBytes(events []*persistence.Event) int64 {
	var n int64
	for _, e := range events {
		n += int64(len(e.Data)) + eventOverhead
	}
	return n
}

// Subscription is a live subscriber to a session's durable events. The
// session actor queues each committed batch on it without ever blocking;
// when the queue would exceed its budget (in batches or in bytes) the
// subscriber is dropped with Lagged set, its queue is released, and it must
// catch up from the log by id before subscribing again. A stalled reader
// therefore pins at most its budget of events.
type Subscription struct {
	signal chan struct{} // capacity 1: "Take has something new"

	mu         sync.Mutex
	queue      [][]*persistence.Event
	bytes      int64
	maxBytes   int64
	maxBatches int
	closed     bool
	lagged     bool

	ready   chan subscribeResult
	actorID string
}

type subscribeResult struct {
	live   bool
	lastID int64
	// Attach only: the session's provider and runtime, and whether the
	// queue already holds every event after the caller's cursor.
	provider, runtime string
	covered           bool
}

func newSubscription(maxBatches int, maxBytes int64) *Subscription {
	return &Subscription{
		signal: make(chan struct{}, 1), ready: make(chan subscribeResult, 1),
		maxBatches: maxBatches, maxBytes: maxBytes,
	}
}

// C is signalled whenever Take has new batches or the subscription ended.
func (s *Subscription) C() <-chan struct{} { return s.signal }

// Take hands over the batches queued since the last call, in id order, and
// reports whether the subscription is still open. buf (the slice a previous
// Take returned, or nil) is reused for the next queue; the caller must not
// keep references into it. Once Take reports false, the subscription is
// over: see Lagged and Finished.
func (s *Subscription) Take(buf [][]*persistence.Event) ([][]*persistence.Event, bool) {
	clear(buf)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.queue
	s.queue, s.bytes = buf[:0], 0
	return out, !s.closed
}

// Lagged reports (after Take reported the end) that the subscriber fell
// behind its budget and was dropped.
func (s *Subscription) Lagged() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lagged
}

// Finished reports (after Take reported the end) that the session's work
// ended without the subscriber lagging: the log holds everything.
func (s *Subscription) Finished() bool { return !s.Lagged() }

// push queues a batch of size bytes; false means the budget is exceeded
// (the caller drops the subscriber as lagged).
func (s *Subscription) push(batch []*persistence.Event, size int64) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true
	}
	if len(s.queue) >= s.maxBatches || (len(s.queue) > 0 && s.bytes+size > s.maxBytes) {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, batch)
	s.bytes += size
	s.mu.Unlock()
	s.notify()
	return true
}

// end closes the subscription. A lagged subscriber's queue is released at
// once: it re-reads the log from its own cursor.
func (s *Subscription) end(lagged bool) {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.lagged = lagged
		if lagged {
			s.queue, s.bytes = nil, 0
		}
	}
	s.mu.Unlock()
	s.notify()
}

func (s *Subscription) notify() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}
