package actors

import (
	"sync/atomic"

	"github.com/aodhq/aod/persistence"
)

// Subscription is a live subscriber to a session's durable events. The
// session actor pushes each committed batch to C without ever blocking: when
// C is full the subscriber is dropped with Lagged set, and must catch up
// from the log by id before subscribing again.
type Subscription struct {
	// C receives batches of durable events in id order. It is closed when
	// the subscription ends: see Lagged and Finished.
	C chan []*persistence.Event

	ready   chan subscribeResult
	lagged  atomic.Bool
	actorID string
}

type subscribeResult struct {
	live   bool
	lastID int64
}

// Lagged reports (after C is closed) that the subscriber fell behind and
// was dropped.
func (s *Subscription) Lagged() bool { return s.lagged.Load() }

// Finished reports (after C is closed) that the session's work ended
// without the subscriber lagging: the log holds everything.
func (s *Subscription) Finished() bool { return !s.lagged.Load() }

func newSubscription(buffer int) *Subscription {
	return &Subscription{C: make(chan []*persistence.Event, buffer), ready: make(chan subscribeResult, 1)}
}
