package sse

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func ptr(n int64) *int64 { return &n }

func TestAppendEventGolden(t *testing.T) {
	t.Parallel()

	// The golden lines of decisions.md D8, each followed by a blank line.
	tests := []struct {
		name  string
		event Event
		want  string
	}{
		{
			"Start",
			Event{Type: TypeStart, ID: 7, Provider: "anthropic", SessionID: "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"},
			`data: {"type": "start", "provider": "anthropic", "session_id": "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"}` + "\n\n",
		},
		{
			"StageDone",
			Event{Type: TypeStage, ID: 41, Stage: "create_sprite", State: "done", DurationMS: ptr(1520), Message: "ignored"},
			"id: 41\n" + `data: {"type": "stage", "id": 41, "stage": "create_sprite", "state": "done", "duration_ms": 1520}` + "\n\n",
		},
		{
			"StageFailedWithMessage",
			Event{Type: TypeStage, ID: 44, Stage: "provision_setup", State: "failed", DurationMS: ptr(88), Message: "Provisioning script failed: exit 1"},
			"id: 44\n" + `data: {"type": "stage", "id": 44, "stage": "provision_setup", "state": "failed", "duration_ms": 88, "message": "Provisioning script failed: exit 1"}` + "\n\n",
		},
		{
			"StageFailedEmptyMessage",
			Event{Type: TypeStage, ID: 44, Stage: "provision_setup", State: "failed", DurationMS: ptr(88)},
			"id: 44\n" + `data: {"type": "stage", "id": 44, "stage": "provision_setup", "state": "failed", "duration_ms": 88}` + "\n\n",
		},
		{
			"StageNilDuration",
			Event{Type: TypeStage, ID: 40, Stage: "runtime_start", State: "started"},
			"id: 40\n" + `data: {"type": "stage", "id": 40, "stage": "runtime_start", "state": "started"}` + "\n\n",
		},
		{
			"StageFailedNilDurationWithMessage",
			Event{Type: TypeStage, ID: 45, Stage: "runtime", State: "failed", Message: "boom"},
			"id: 45\n" + `data: {"type": "stage", "id": 45, "stage": "runtime", "state": "failed", "message": "boom"}` + "\n\n",
		},
		{
			"StageZeroDuration",
			Event{Type: TypeStage, ID: 46, Stage: "s", State: "done", DurationMS: ptr(0)},
			"id: 46\n" + `data: {"type": "stage", "id": 46, "stage": "s", "state": "done", "duration_ms": 0}` + "\n\n",
		},
		{
			"TurnStart",
			Event{Type: TypeTurnStart, ID: 47, Turn: ptr(1)},
			`data: {"type": "turn_start", "id": 47, "turn": 1}` + "\n\n",
		},
		{
			"TurnStartNullTurn",
			Event{Type: TypeTurnStart, ID: 47},
			`data: {"type": "turn_start", "id": 47, "turn": null}` + "\n\n",
		},
		{
			"Output",
			Event{Type: TypeOutput, ID: 47, Stream: "stdout", Data: "café 😀 <b>&\n", Turn: ptr(1)},
			"id: 47\n" + `data: {"type": "output", "id": 47, "stream": "stdout", "data": "caf\u00e9 \ud83d\ude00 <b>&\n", "turn": 1}` + "\n\n",
		},
		{
			"OutputNullTurn",
			Event{Type: TypeOutput, ID: 3, Stream: "stderr", Data: ""},
			"id: 3\n" + `data: {"type": "output", "id": 3, "stream": "stderr", "data": "", "turn": null}` + "\n\n",
		},
		{
			"Exit",
			Event{Type: TypeExit, ID: 52, Code: 0},
			"id: 52\n" + `data: {"type": "exit", "id": 52, "code": 0}` + "\n\n",
		},
		{
			"Error",
			Event{Type: TypeError, ID: 52, Message: "Session failed"},
			"id: 52\n" + `data: {"type": "error", "id": 52, "message": "Session failed"}` + "\n\n",
		},
		{
			"Terminated",
			Event{Type: TypeTerminated, ID: 52, Message: "Session terminated"},
			"id: 52\n" + `data: {"type": "terminated", "id": 52, "message": "Session terminated"}` + "\n\n",
		},
		{
			"Stale",
			Event{Type: TypeStale, ID: 52, Message: "No output for 600s"},
			"id: 52\n" + `data: {"type": "stale", "id": 52, "message": "No output for 600s"}` + "\n\n",
		},
		{
			"ExitIDZero",
			Event{Type: TypeExit, ID: 0, Code: 1},
			`data: {"type": "exit", "id": 0, "code": 1}` + "\n\n",
		},
		{
			"TerminatedIDZero",
			Event{Type: TypeTerminated, Message: "Session terminated"},
			`data: {"type": "terminated", "id": 0, "message": "Session terminated"}` + "\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, string(AppendEvent(nil, &tt.event)))
			require.Equal(t, "x"+tt.want, string(AppendEvent([]byte("x"), &tt.event)))
		})
	}
}

func TestAppendHeartbeat(t *testing.T) {
	t.Parallel()
	require.Equal(t, ": heartbeat\n\n", string(AppendHeartbeat(nil)))
	require.Equal(t, "id: 1\ndata: x\n\n: heartbeat\n\n", string(AppendHeartbeat([]byte("id: 1\ndata: x\n\n"))))
}

func TestHasIDLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		typ  string
		id   int64
		want bool
	}{
		{TypeStart, 5, false},
		{TypeTurnStart, 5, false},
		{TypeStage, 5, true},
		{TypeOutput, 5, true},
		{TypeExit, 5, true},
		{TypeExit, 0, false},
		{TypeError, 0, false},
		{TypeStale, -1, false},
	} {
		e := Event{Type: tt.typ, ID: tt.id}
		require.Equal(t, tt.want, e.HasIDLine(), "%s id %d", tt.typ, tt.id)
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   string
		exitCode *int64
		want     Event
	}{
		{"Terminated", "terminated", nil, Event{Type: TypeTerminated, ID: 52, Message: "Session terminated"}},
		{"TerminatedWithCode", "terminated", ptr(137), Event{Type: TypeTerminated, ID: 52, Message: "Session terminated"}},
		{"FailedNoCode", "failed", nil, Event{Type: TypeError, ID: 52, Message: "Session failed"}},
		{"FailedWithCode", "failed", ptr(2), Event{Type: TypeExit, ID: 52, Code: 2}},
		{"Completed", "completed", ptr(0), Event{Type: TypeExit, ID: 52, Code: 0}},
		{"CompletedNilCode", "completed", nil, Event{Type: TypeExit, ID: 52, Code: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, Terminal(tt.status, tt.exitCode, 52))
		})
	}

	e := Terminal("failed", nil, 0)
	require.Equal(t, `data: {"type": "error", "id": 0, "message": "Session failed"}`+"\n\n", string(AppendEvent(nil, &e)))
}

func TestStale(t *testing.T) {
	t.Parallel()
	require.Equal(t, Event{Type: TypeStale, ID: 52, Message: "No output for 600s"}, Stale(52, 600*time.Second))
	require.Equal(t, "No output for 10s", Stale(1, 10*time.Second+900*time.Millisecond).Message)
	require.Equal(t, "No output for 0s", Stale(1, 300*time.Millisecond).Message)
	e := Stale(52, 10*time.Minute)
	require.Equal(t, "id: 52\n"+`data: {"type": "stale", "id": 52, "message": "No output for 600s"}`+"\n\n", string(AppendEvent(nil, &e)))
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()

	events := []Event{
		{Type: TypeStart, Provider: "anthropic", SessionID: "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"},
		{Type: TypeStage, ID: 41, Stage: "create_sprite", State: "done", DurationMS: ptr(1520)},
		{Type: TypeStage, ID: 44, Stage: "provision_setup", State: "failed", DurationMS: ptr(88), Message: "exit 1\n\"x\""},
		{Type: TypeTurnStart, ID: 47, Turn: ptr(1)},
		{Type: TypeOutput, ID: 47, Stream: "stdout", Data: "café 😀 <b>&\n\x00\x7f\u2028data: x\n\nid: 9\r\n", Turn: ptr(1)},
		{Type: TypeOutput, ID: 48, Stream: "stderr", Data: "e"},
		{Type: TypeExit, ID: 52, Code: -1},
		{Type: TypeError, ID: 0, Message: "Session failed"},
	}
	var stream []byte
	for i := range events {
		stream = AppendEvent(stream, &events[i])
		if i == 2 {
			stream = AppendHeartbeat(stream)
		}
	}
	require.True(t, utf8.ValidString(string(stream)))

	r := bufio.NewReader(strings.NewReader(string(stream)))
	for i, e := range events {
		f, err := ReadEvent(r)
		require.NoError(t, err, "event %d", i)
		if i == 3 {
			require.Equal(t, Frame{Comment: "heartbeat"}, f)
			f, err = ReadEvent(r)
			require.NoError(t, err)
		}
		wantID := ""
		if e.HasIDLine() {
			wantID = strings.TrimPrefix(strings.SplitN(string(AppendEvent(nil, &e)), "\n", 2)[0], "id: ")
		}
		require.Equal(t, wantID, f.ID, "event %d", i)
		require.Empty(t, f.Event)
		require.Empty(t, f.Comment)
		require.Equal(t, string(AppendPayload(nil, &e)), f.Data)

		m, err := DecodeData(f)
		require.NoError(t, err)
		require.Equal(t, e, eventFromMap(t, m), "event %d", i)
	}
	_, err := ReadEvent(r)
	require.ErrorIs(t, err, io.EOF)
}

// eventFromMap rebuilds an Event from a decoded payload, checking that it
// has exactly the members its type calls for.
func eventFromMap(t *testing.T, m map[string]any) Event {
	t.Helper()
	str := func(k string) string {
		t.Helper()
		v, ok := m[k].(string)
		require.True(t, ok, "member %q: %#v", k, m[k])
		delete(m, k)
		return v
	}
	num := func(k string) int64 {
		t.Helper()
		v, ok := m[k].(float64)
		require.True(t, ok, "member %q: %#v", k, m[k])
		delete(m, k)
		return int64(v)
	}
	optNum := func(k string) *int64 {
		t.Helper()
		if v, ok := m[k]; ok && v == nil {
			delete(m, k)
			return nil
		}
		return ptr(num(k))
	}
	var e Event
	e.Type = str("type")
	if e.Type != TypeStart {
		e.ID = num("id")
	}
	switch e.Type {
	case TypeStart:
		e.Provider, e.SessionID = str("provider"), str("session_id")
	case TypeStage:
		e.Stage, e.State = str("stage"), str("state")
		if _, ok := m["duration_ms"]; ok {
			e.DurationMS = ptr(num("duration_ms"))
		}
		if _, ok := m["message"]; ok {
			e.Message = str("message")
		}
	case TypeTurnStart:
		e.Turn = optNum("turn")
	case TypeOutput:
		e.Stream, e.Data, e.Turn = str("stream"), str("data"), optNum("turn")
	case TypeExit:
		e.Code = num("code")
	default:
		e.Message = str("message")
	}
	require.Empty(t, m, "unexpected members")
	return e
}

func TestAppendEventAllocs(t *testing.T) {
	// Not parallel: AllocsPerRun sets GOMAXPROCS to 1 while it runs.
	e := benchEvent()
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendEvent(buf[:0], &e)
	})
	require.Zero(t, allocs)
}

// benchEvent is an output event with a 4 KiB chunk of mostly ASCII text.
func benchEvent() Event {
	const line = "{\"type\":\"assistant\",\"text\":\"Building café ✓ <b>done</b> & tab\\there 😀\"}\n"
	var b strings.Builder
	for b.Len()+len(line) <= 4096 {
		b.WriteString(line)
	}
	b.WriteString(strings.Repeat("x", 4096-b.Len()))
	return Event{Type: TypeOutput, ID: 123456, Stream: "stdout", Data: b.String(), Turn: ptr(3)}
}

func BenchmarkAppendEvent(b *testing.B) {
	e := benchEvent()
	b.SetBytes(int64(len(e.Data)))
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf = AppendEvent(buf[:0], &e)
	}
}
