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
// A panic in Receive or in a work goroutine is recovered (hollywood would
// otherwise crash the process after its last restart): the session and its
// unfinished turn are marked failed in the database, never overwriting
// "terminated", and the actor retires. A node shutdown cancels the work
// without recording an outcome: the next start resumes it.
package actors
