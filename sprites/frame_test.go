package sprites

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDecodeFrame(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		in      []byte
		wantID  byte
		want    []byte
		wantErr bool
		code    int
	}{
		{name: "Empty", in: nil, wantErr: true},
		{name: "ExitEmptyPayload", in: []byte{3}, wantID: FrameExit, want: []byte{}, code: 0},
		{name: "ExitCode", in: []byte{3, 143}, wantID: FrameExit, want: []byte{143}, code: 143},
		{name: "Stderr", in: []byte{2, 'x'}, wantID: FrameStderr, want: []byte("x")},
		{name: "Stdout", in: []byte{1, 'h', 'i'}, wantID: FrameStdout, want: []byte("hi")},
		{name: "StdinEOF", in: []byte{4}, wantID: FrameStdinEOF, want: []byte{}},
		{name: "UnknownID", in: []byte{9, 1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := DecodeFrame(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrMalformedFrame)
				var fe *FrameError
				require.ErrorAs(t, err, &fe)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantID, f.ID)
			require.Equal(t, tt.want, f.Data)
			if f.ID == FrameExit {
				require.Equal(t, tt.code, f.ExitCode())
			}
			require.Equal(t, tt.in, EncodeFrame(f.ID, f.Data))
		})
	}
}

func TestParseTextMessage(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		in      string
		want    TextMessage
		wantErr bool
	}{
		{name: "BadJSON", in: `{"type":`, wantErr: true},
		{name: "Control", in: `control:{"type":"op.start"}`, want: TextMessage{Control: true}},
		{name: "Exit", in: `{"type":"exit","exit_code":3}`, want: TextMessage{Type: "exit", ExitCode: 3}},
		{name: "ExitMissingCode", in: `{"type":"exit"}`, wantErr: true},
		{name: "ExitNonInteger", in: `{"type":"exit","exit_code":1.5}`, wantErr: true},
		{name: "NoType", in: `{"session_id":1}`, wantErr: true},
		{name: "PortOpened", in: `{"type":"port_opened","port":8080,"address":"0.0.0.0","pid":12}`, want: TextMessage{Type: "port_opened", Port: 8080, Address: "0.0.0.0", PID: 12}},
		{name: "SessionInfoInt", in: `{"type":"session_info","session_id":1234,"command":"bash","created":1700000000,"tty":false}`, want: TextMessage{Type: "session_info", SessionID: "1234", Command: "bash", Created: 1700000000}},
		{name: "SessionInfoMissingID", in: `{"type":"session_info"}`, wantErr: true},
		{name: "SessionInfoString", in: `{"type":"session_info","session_id":"abc"}`, want: TextMessage{Type: "session_info", SessionID: "abc"}},
		{name: "Unknown", in: `{"type":"something_new","x":1}`, want: TextMessage{Type: "something_new"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := ParseTextMessage([]byte(tt.in))
			if tt.wantErr {
				require.ErrorIs(t, err, ErrMalformedFrame)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, m)
		})
	}
}

func TestParseErrorBody(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   Error
		is     error
	}{
		{
			name: "FSShape", status: 404, body: `{"error":"no such file","code":"ENOENT","path":"/x"}`,
			want: Error{Status: 404, Code: "ENOENT", Message: "no such file", Path: "/x"}, is: ErrNotFound,
		},
		{
			name: "RateLimitBodyOnly", status: 429,
			body: `{"error":"sprite_creation_rate_limited","message":"slow down","retry_after_seconds":7,"limit":10}`,
			want: Error{Status: 429, Code: "sprite_creation_rate_limited", Message: "slow down", RetryAfter: 7 * time.Second}, is: ErrRateLimited,
		},
		{
			name: "RateLimitHeaderWins", status: 429, header: http.Header{"Retry-After": {"2"}},
			body: `{"error":"x","message":"m","retry_after_seconds":7}`,
			want: Error{Status: 429, Code: "x", Message: "m", RetryAfter: 2 * time.Second}, is: ErrRateLimited,
		},
		{
			name: "RawText", status: 502, body: "bad gateway\n",
			want: Error{Status: 502, Message: "bad gateway"},
		},
		{
			name: "Unauthorized", status: 401, body: `{"error":"invalid token"}`,
			want: Error{Status: 401, Message: "invalid token"}, is: ErrUnauthorized,
		},
		{
			name: "EmptyBody", status: 500,
			want: Error{Status: 500, Message: "Internal Server Error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := parseErrorBody(tt.status, tt.header, []byte(tt.body))
			got := *e
			got.Body = nil
			require.Equal(t, tt.want, got)
			if tt.is != nil {
				require.ErrorIs(t, e, tt.is)
			}
			for _, s := range []error{ErrNotFound, ErrRateLimited, ErrUnauthorized} {
				if s != tt.is {
					require.False(t, errors.Is(e, s))
				}
			}
			require.NotEmpty(t, e.Error())
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range [][]byte{nil, {0}, {1, 'a'}, {2, 'b', 'c'}, {3}, {3, 1}, {3, 255, 0}, {4}, {5}, {255, 1, 2}} {
		f.Add(seed)
	}
	for _, s := range []string{`{"type":"session_info","session_id":1}`, `{"type":"session_info","session_id":"x"}`, `{"type":"exit","exit_code":1}`, `control:x`, `{"type":"exit","exit_code":1e99}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, err := DecodeFrame(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformedFrame) {
				t.Fatalf("untyped error %v", err)
			}
		} else {
			if fr.ID > FrameStdinEOF || len(fr.Data) != len(msg)-1 {
				t.Fatalf("bad frame %+v from %q", fr, msg)
			}
			if c := fr.ExitCode(); c < 0 || c > 255 {
				t.Fatalf("exit code %d", c)
			}
		}
		if _, err := ParseTextMessage(msg); err != nil && !errors.Is(err, ErrMalformedFrame) {
			t.Fatalf("untyped text error %v", err)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	f.Add(429, "3", []byte(`{"error":"sprite_creation_rate_limited","message":"m","retry_after_seconds":3}`))
	f.Add(404, "", []byte(`{"error":"no such file","code":"ENOENT","path":"/x"}`))
	f.Add(500, "Wed, 21 Oct 2015 07:28:00 GMT", []byte("oops"))
	f.Add(400, "-1", []byte(`{"error":{"nested":true},"code":12}`))
	f.Add(401, "NaN", []byte(`{"retry_after_seconds":1e308}`))
	f.Add(503, "1e400", []byte{0xff, 0xfe, 0})
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		e := parseErrorBody(status, http.Header{"Retry-After": {retryAfter}}, body)
		if e.Status != status {
			t.Fatalf("status %d != %d", e.Status, status)
		}
		if e.RetryAfter < 0 || e.RetryAfter > maxRetryAfter {
			t.Fatalf("retry after %v", e.RetryAfter)
		}
		if len(e.Body) > maxErrorBody {
			t.Fatalf("body too long")
		}
		_ = e.Error()
		_ = errors.Is(e, ErrNotFound)
	})
}
