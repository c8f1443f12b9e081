package sse

import (
	"strconv"
	"time"
)

// Event types, the "type" member of every payload.
const (
	TypeError      = "error"
	TypeExit       = "exit"
	TypeOutput     = "output"
	TypeStage      = "stage"
	TypeStale      = "stale"
	TypeStart      = "start"
	TypeTerminated = "terminated"
	TypeTurnStart  = "turn_start"
)

// Messages of the terminal events.
const (
	MessageSessionFailed     = "Session failed"
	MessageSessionTerminated = "Session terminated"
)

// StageFailed is the stage state whose event may carry a message.
const StageFailed = "failed"

// Event is one stream event. Type selects which fields are written; the
// others are ignored. Payload members, in this order (D8):
//
//	start       type, provider, session_id                 (no id member)
//	stage       type, id, stage, state, duration_ms?, message?
//	turn_start  type, id, turn
//	output      type, id, stream, data, turn
//	exit        type, id, code
//	error, terminated, stale (and any other type): type, id, message
//
// duration_ms is left out when DurationMS is nil; message is written on a
// stage only when State is "failed" and Message is not empty. A nil Turn is
// written as null.
type Event struct {
	// Type is one of the Type constants.
	Type string
	// ID is the log row id; the terminal events carry the last row id seen.
	ID int64

	// Provider and SessionID are the start event's members.
	Provider, SessionID string

	// Stage, State, DurationMS and Message are the stage event's members;
	// Message is also the text of error, terminated and stale.
	Stage, State string
	DurationMS   *int64
	Message      string

	// Turn is the turn number of turn_start and output (nil for null).
	Turn *int64
	// Stream (stdout or stderr) and Data (the chunk text) are output's.
	Stream, Data string

	// Code is the exit event's exit code.
	Code int64
}

// Terminal returns the event that ends a stream once the session is in the
// terminal status completed, failed or terminated: terminated becomes
// terminated "Session terminated", failed with a nil exit code becomes error
// "Session failed", and anything else becomes exit with the exit code (0 when
// nil). lastID is the last row id seen, or the cursor.
func Terminal(status string, exitCode *int64, lastID int64) Event {
	switch {
	case status == "terminated":
		return Event{Type: TypeTerminated, ID: lastID, Message: MessageSessionTerminated}
	case status == "failed" && exitCode == nil:
		return Event{Type: TypeError, ID: lastID, Message: MessageSessionFailed}
	}
	e := Event{Type: TypeExit, ID: lastID}
	if exitCode != nil {
		e.Code = *exitCode
	}
	return e
}

// Stale returns the event that ends a stream which saw no rows for idle, the
// configured idle limit: "No output for Ns" with N its whole seconds.
func Stale(lastID int64, idle time.Duration) Event {
	msg := "No output for " + strconv.FormatInt(int64(idle/time.Second), 10) + "s"
	return Event{Type: TypeStale, ID: lastID, Message: msg}
}

// HasIDLine reports whether e's frame starts with an "id:" line: when its
// id is positive and it is neither start nor turn_start.
func (e *Event) HasIDLine() bool {
	return e.ID > 0 && e.Type != TypeStart && e.Type != TypeTurnStart
}

// AppendEvent appends e's whole frame: "id: N\n" when e.HasIDLine, then
// "data: " + AppendPayload + "\n\n". Encode an event once and write the same
// bytes to every subscriber.
func AppendEvent(dst []byte, e *Event) []byte {
	if e.HasIDLine() {
		dst = append(dst, "id: "...)
		dst = strconv.AppendInt(dst, e.ID, 10)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = AppendPayload(dst, e)
	return append(dst, '\n', '\n')
}

// AppendPayload appends e's JSON payload, the text after "data: ", with the
// members and order documented on Event.
func AppendPayload(dst []byte, e *Event) []byte {
	dst = append(dst, `{"type": `...)
	dst = AppendString(dst, e.Type)
	if e.Type == TypeStart {
		dst = append(dst, `, "provider": `...)
		dst = AppendString(dst, e.Provider)
		dst = append(dst, `, "session_id": `...)
		dst = AppendString(dst, e.SessionID)
		return append(dst, '}')
	}
	dst = append(dst, `, "id": `...)
	dst = strconv.AppendInt(dst, e.ID, 10)
	switch e.Type {
	case TypeStage:
		dst = append(dst, `, "stage": `...)
		dst = AppendString(dst, e.Stage)
		dst = append(dst, `, "state": `...)
		dst = AppendString(dst, e.State)
		if e.DurationMS != nil {
			dst = append(dst, `, "duration_ms": `...)
			dst = strconv.AppendInt(dst, *e.DurationMS, 10)
		}
		if e.State == StageFailed && e.Message != "" {
			dst = append(dst, `, "message": `...)
			dst = AppendString(dst, e.Message)
		}
	case TypeTurnStart:
		dst = append(dst, `, "turn": `...)
		dst = appendTurn(dst, e.Turn)
	case TypeOutput:
		dst = append(dst, `, "stream": `...)
		dst = AppendString(dst, e.Stream)
		dst = append(dst, `, "data": `...)
		dst = AppendString(dst, e.Data)
		dst = append(dst, `, "turn": `...)
		dst = appendTurn(dst, e.Turn)
	case TypeExit:
		dst = append(dst, `, "code": `...)
		dst = strconv.AppendInt(dst, e.Code, 10)
	default:
		dst = append(dst, `, "message": `...)
		dst = AppendString(dst, e.Message)
	}
	return append(dst, '}')
}

func appendTurn(dst []byte, turn *int64) []byte {
	if turn == nil {
		return AppendNull(dst)
	}
	return strconv.AppendInt(dst, *turn, 10)
}

// Heartbeat is the comment frame sent on an idle stream.
const Heartbeat = ": heartbeat\n\n"

// AppendHeartbeat appends the Heartbeat comment frame.
func AppendHeartbeat(dst []byte) []byte {
	return append(dst, Heartbeat...)
}
