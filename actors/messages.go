package actors

import (
	"github.com/aodhq/aod/persistence"
)

// Messages the session actor handles. All are pointers; none crosses the
// network.
type (
	// loadState makes the actor (re)read its session and decide what to do.
	loadState struct{}
	// stateLoaded carries the result of loadState.
	stateLoaded struct {
		gen     uint64
		session *persistence.Session
		turn    *persistence.Turn
		lastID  int64
		err     error
	}
	// durable reports events committed by the log writer, in order, and
	// the notes of the ops they belonged to.
	durable struct {
		gen    uint64
		events []*persistence.Event
		notes  []any
		// held is what the batch holds of the writer's byte budget; the
		// actor releases it once the batch is fanned out.
		held int64
	}
	// kick asks an idle actor to look for new work (a new session or a new
	// turn).
	kick struct{}
	// terminateCmd stops running work; the HTTP layer has already marked
	// the session terminated.
	terminateCmd struct{}
	// subscribeCmd registers a live subscriber.
	subscribeCmd struct{ sub *Subscription }
	// unsubscribeCmd removes one.
	unsubscribeCmd struct{ sub *Subscription }
	// attachCmd registers a live subscriber of userID's session only if the
	// actor is running its work, with the events after `after` it still
	// holds queued first.
	attachCmd struct {
		sub    *Subscription
		userID int64
		after  int64
	}
	// execStarted tells the actor which exec runs the current turn.
	execStarted struct {
		gen    uint64
		execID string
	}
	// writerAbandoned reports that the log writer could not commit a batch
	// and stopped: the actor stops its work without an outcome and retires.
	writerAbandoned struct {
		gen uint64
		err error
	}
	// workPanicked reports a panic in a work goroutine.
	workPanicked struct {
		gen    uint64
		reason string
	}

	// Notes (delivered through durable once their op committed).

	// provisioned: provisioning succeeded; run the pending turn.
	provisioned struct{}
	// workFinished: provisioning failed or a turn ended; the session may
	// now be idle.
	workFinished struct{}
)

// publishCmd appends one stdout output event for the current turn through
// the session's writer and fan-out (the D19 benchmark hook).
type publishCmd struct {
	data  string
	reply chan publishResult
}

type publishResult struct {
	id  int64
	err error
}
