package sprites

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Stream ids of the non-TTY exec framing. A binary WebSocket message is one
// frame: the id byte followed by the payload (no length field).
const (
	FrameStdin    byte = 0x00 // client → server: stdin bytes
	FrameStdout   byte = 0x01 // server → client: stdout bytes
	FrameStderr   byte = 0x02 // server → client: stderr bytes
	FrameExit     byte = 0x03 // server → client: exit; payload[0] is the code, empty means 0
	FrameStdinEOF byte = 0x04 // client → server: stdin EOF, empty payload
)

// ErrMalformedFrame is matched (with errors.Is) by every *FrameError.
var ErrMalformedFrame = errors.New("sprites: malformed exec frame")

// FrameError describes a binary frame or text message that could not be
// decoded. It matches ErrMalformedFrame.
type FrameError struct {
	// Reason says what is wrong.
	Reason string
	// Prefix holds the first bytes of the offending message (at most 32).
	Prefix []byte
	// Err is the underlying decoding error, if any.
	Err error
}

// Error implements error.
func (e *FrameError) Error() string {
	s := "sprites: malformed exec frame: " + e.Reason
	if len(e.Prefix) > 0 {
		s += fmt.Sprintf(" (starts %q)", e.Prefix)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrMalformedFrame.
func (e *FrameError) Is(target error) bool { return target == ErrMalformedFrame }

// Unwrap returns the underlying error.
func (e *FrameError) Unwrap() error { return e.Err }

func newFrameError(reason string, msg []byte, err error) *FrameError {
	p := msg
	if len(p) > 32 {
		p = p[:32]
	}
	return &FrameError{Reason: reason, Prefix: append([]byte(nil), p...), Err: err}
}

// Frame is one decoded binary exec frame.
type Frame struct {
	// ID is the stream id (FrameStdin … FrameStdinEOF).
	ID byte
	// Data is the payload (aliasing the decoded message). For FrameExit use
	// ExitCode instead.
	Data []byte
}

// ExitCode returns the exit code carried by a FrameExit frame: the first
// payload byte, or 0 when the payload is empty.
func (f Frame) ExitCode() int {
	if len(f.Data) == 0 {
		return 0
	}
	return int(f.Data[0])
}

// DecodeFrame decodes one binary WebSocket message. An empty message or an
// unknown stream id gives a *FrameError; it never panics. Data aliases msg.
func DecodeFrame(msg []byte) (Frame, error) {
	if len(msg) == 0 {
		return Frame{}, newFrameError("empty frame", nil, nil)
	}
	id := msg[0]
	if id > FrameStdinEOF {
		return Frame{}, newFrameError("unknown stream id "+strconv.Itoa(int(id)), msg, nil)
	}
	return Frame{ID: id, Data: msg[1:]}, nil
}

// EncodeFrame returns a binary message: id followed by payload.
func EncodeFrame(id byte, payload []byte) []byte {
	b := make([]byte, 1+len(payload))
	b[0] = id
	copy(b[1:], payload)
	return b
}

// EncodeExitFrame returns the binary exit frame for code (0–255; other
// values are reduced modulo 256 like a process exit status).
func EncodeExitFrame(code int) []byte {
	return []byte{FrameExit, byte(code & 0xff)}
}

// Text message types sent by the server.
const (
	MessageSessionInfo = "session_info"
	MessageExit        = "exit"
	MessagePortOpened  = "port_opened"
	MessagePortClosed  = "port_closed"
)

// TextMessage is a decoded JSON text message of the exec WebSocket.
type TextMessage struct {
	// Type is "session_info", "exit", "port_opened", "port_closed", or
	// another (unknown) type which callers should ignore.
	Type string `json:"type"`
	// Control is true for a "control:"-prefixed message, which belongs to
	// the control channel and is to be ignored; no other field is set.
	Control bool `json:"-"`

	// SessionID is the exec id of a session_info (sent as a number or a
	// string; always a string here).
	SessionID string `json:"-"`
	Command   string `json:"command,omitempty"`
	Created   int64  `json:"created,omitempty"`
	TTY       bool   `json:"tty,omitempty"`
	IsOwner   bool   `json:"is_owner,omitempty"`
	Cols      int    `json:"cols,omitempty"`
	Rows      int    `json:"rows,omitempty"`

	// ExitCode is the code of an exit message.
	ExitCode int `json:"exit_code"`

	// Port, Address and PID describe a port_opened/port_closed notice.
	Port    int    `json:"port,omitempty"`
	Address string `json:"address,omitempty"`
	PID     int    `json:"pid,omitempty"`
}

// wireText is TextMessage as it arrives, with a flexible session id.
type wireText struct {
	Type      string          `json:"type"`
	SessionID json.RawMessage `json:"session_id"`
	Command   string          `json:"command"`
	Created   json.Number     `json:"created"`
	TTY       bool            `json:"tty"`
	IsOwner   bool            `json:"is_owner"`
	Cols      int             `json:"cols"`
	Rows      int             `json:"rows"`
	ExitCode  *json.Number    `json:"exit_code"`
	Port      int             `json:"port"`
	Address   string          `json:"address"`
	PID       int             `json:"pid"`
}

// ParseTextMessage decodes a text WebSocket message. A "control:" prefix
// gives a TextMessage with Control set. Invalid JSON, a missing type, a
// session_info without a usable session_id, or an exit without an integer
// exit_code give a *FrameError.
func ParseTextMessage(msg []byte) (TextMessage, error) {
	s := strings.TrimSpace(string(msg))
	if strings.HasPrefix(s, "control:") {
		return TextMessage{Control: true}, nil
	}
	var w wireText
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return TextMessage{}, newFrameError("bad JSON text message", msg, err)
	}
	if w.Type == "" {
		return TextMessage{}, newFrameError("text message without type", msg, nil)
	}
	m := TextMessage{
		Type: w.Type, Command: w.Command, TTY: w.TTY, IsOwner: w.IsOwner,
		Cols: w.Cols, Rows: w.Rows, Port: w.Port, Address: w.Address, PID: w.PID,
	}
	if w.Created != "" {
		if f, err := w.Created.Float64(); err == nil {
			m.Created = int64(f)
		}
	}
	switch w.Type {
	case MessageSessionInfo:
		id, err := sessionIDString(w.SessionID)
		if err != nil {
			return TextMessage{}, newFrameError("session_info with bad session_id", msg, err)
		}
		m.SessionID = id
	case MessageExit:
		if w.ExitCode == nil {
			return TextMessage{}, newFrameError("exit without exit_code", msg, nil)
		}
		code, err := strconv.ParseInt(w.ExitCode.String(), 10, 32)
		if err != nil {
			return TextMessage{}, newFrameError("exit with non-integer exit_code", msg, err)
		}
		m.ExitCode = int(code)
	}
	return m, nil
}

// sessionIDString accepts a JSON number or string id.
func sessionIDString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New("missing")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return "", errors.New("empty")
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", err
	}
	if i, err := n.Int64(); err == nil {
		return strconv.FormatInt(i, 10), nil
	}
	return "", fmt.Errorf("not an integer: %s", n)
}
