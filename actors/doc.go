// Package actors runs one supervised hollywood actor per live session on
// this node. The actor, "session/<id>", owns the session's sandbox handle,
// turn state, running exec and the fan-out of durable events to live SSE
// subscribers. HTTP handlers talk to it only through the Manager (Kick,
// Terminate, Attach, Subscribe, Publish).
//
// # Shape
//
// Receive never blocks on I/O. Loading state, provisioning, running a turn
// and writing the log happen in goroutines owned by the actor, which report
// back by message:
//
//	Manager.Kick ─▶ actor ─ loadState ─▶ goroutine reads session + turn
//	                  ▲                            │
//	                  └──────── stateLoaded ◀──────┘
//	pending, not provisioned ─▶ provision goroutine (8 stages)
//	pending, provisioned     ─▶ turn goroutine (exec)
//	running (after restart)  ─▶ turn goroutine (re-attach from stored offsets)
//	otherwise                ─▶ idle: the actor retires; Kick re-creates it
//
// # The log
//
// Every event of a session — stage, output, lifecycle — goes through its
// single log writer (D7): producers submit to a bounded queue (a full queue
// blocks the producer, so reading from the sandbox slows down and nothing is
// dropped); the writer commits whatever is queued in one transaction (group
// commit), together with the state changes that follow those events, then
// sends the committed batch to the actor, which pushes it to each
// subscriber's bounded buffer without blocking. A subscriber whose buffer is
// full is dropped as lagged and catches up from the log by id.
//
// A turn's exec id and the number of raw bytes of each stream already in
// the log are stored with the events, so after a restart the turn is
// re-attached and every byte arrives exactly once (D4, D5, D20).
//
// # Failure
//
// Never drop and continue. The writer retries a failing commit with backoff
// within Config.CommitBudget (about a minute); a transient error (a lost
// connection) is retried, a permanent one (a violated foreign key: the
// session was deleted) is not. A batch that still cannot be committed stops
// the writer — nothing after it is committed, every waiting producer gets an
// error — and the session's work ends without recording an outcome, as at a
// node shutdown, and the actor retires. The durable offsets are those of the
// last committed batch, so when the Reconciler next kicks the session
// (every few seconds, each pending or running session this node owns that
// has no actor) the turn re-attaches and re-reads the missing bytes exactly
// once (D5). The same sweep resumes a session whose load failed during an
// outage.
//
// A panic in a work goroutine is recovered and recorded through the writer
// (ordered after its queued events). A panic in Receive leaves the actor's
// state suspect: its work and writer are stopped (the writer drains what was
// queued), and only once the writer is gone is the failure appended —
// unfinished turns and the session become failed, never overwriting
// "terminated" — so there is never a second writer (D7); then this
// incarnation, and never a successor, retires. hollywood would otherwise
// crash the process after its last restart.
//
// Every goroutine an actor starts is counted by the Manager, whose Stop
// waits for them within its context. Tests wait on TestSignals
// (ActorRetired, BatchAbandoned, PanicRecorded, SubscriberGone) instead of
// polling; actorstest.FaultStore injects store faults, storetest is the
// store's conformance suite.
package actors
