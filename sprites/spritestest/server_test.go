package spritestest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
)

// call does a raw request against the fake and decodes a JSON answer.
func call(t *testing.T, s *Server, method, path, token string, body []byte, contentType string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL()+path, rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func TestServerREST(t *testing.T) {
	t.Parallel()

	s := NewServer(t, Options{})
	tok := s.Token()
	const name = "rest-sprite"

	resp, body := call(t, s, http.MethodPost, "/v1/sprites", tok, []byte(`{"name":"`+name+`"}`), "application/json")
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(body))
	var obj map[string]any
	require.NoError(t, json.Unmarshal(body, &obj))
	for _, k := range []string{"id", "name", "organization", "status", "url", "url_settings", "created_at", "updated_at"} {
		require.Contains(t, obj, k)
	}
	_, err := uuid.Parse(obj["id"].(string))
	require.NoError(t, err)
	require.NotEmpty(t, resp.Header.Get("Sprite-Version"))

	tests := []struct {
		name       string
		method     string
		path       string
		token      string
		body       string
		ct         string
		wantStatus int
		wantBody   string // substring
	}{
		{name: "BadName", method: "POST", path: "/v1/sprites", body: `{"name":"Bad Name"}`, ct: "application/json", wantStatus: 400, wantBody: "invalid_name"},
		{name: "ChmodMissing", method: "POST", path: "/v1/sprites/" + name + "/fs/chmod", body: `{"path":"/home/sprite/nope","workingDir":"/","mode":"0600"}`, ct: "application/json", wantStatus: 404, wantBody: `"code":"ENOENT"`},
		{name: "Control404", method: "GET", path: "/v1/sprites/" + name + "/control", wantStatus: 404},
		{name: "Delete404", method: "DELETE", path: "/v1/sprites/missing", wantStatus: 404, wantBody: "sprite_not_found"},
		{name: "ExecHEAD", method: "HEAD", path: "/v1/sprites/" + name + "/exec", wantStatus: 200},
		{name: "FSList", method: "GET", path: "/v1/sprites/" + name + "/fs/list?path=/home/sprite/x/f.txt&workingDir=/", wantStatus: 200, wantBody: `"mode":"0640"`},
		{name: "FSRead", method: "GET", path: "/v1/sprites/" + name + "/fs/read?path=x/f.txt&workingDir=/home/sprite", wantStatus: 200, wantBody: "hello"},
		{name: "FSReadMissing", method: "GET", path: "/v1/sprites/" + name + "/fs/read?path=/home/sprite/nope&workingDir=/", wantStatus: 404, wantBody: `"code":"ENOENT"`},
		{name: "FSReadDirectory", method: "GET", path: "/v1/sprites/" + name + "/fs/read?path=/home/sprite/x&workingDir=/", wantStatus: 400, wantBody: `not a regular file (a directory)","path":"/home/sprite/x"`},
		{name: "FSWriteNoMkdir", method: "PUT", path: "/v1/sprites/" + name + "/fs/write?path=/home/sprite/no/such/dir/f&workingDir=/", body: "x", ct: "application/octet-stream", wantStatus: 404},
		{name: "Get", method: "GET", path: "/v1/sprites/" + name, wantStatus: 200, wantBody: `"name":"` + name + `"`},
		{name: "Get404", method: "GET", path: "/v1/sprites/missing", wantStatus: 404},
		{name: "Kill404", method: "POST", path: "/v1/sprites/" + name + "/exec/nope/kill?signal=TERM", wantStatus: 404},
		{name: "List", method: "GET", path: "/v1/sprites?prefix=rest-", wantStatus: 200, wantBody: `"has_more":false`},
		{name: "PolicyInvalid", method: "POST", path: "/v1/sprites/" + name + "/policy/network", body: `{"rules":[{"domain":"x.com","action":"maybe"}]}`, ct: "application/json", wantStatus: 400, wantBody: "invalid_policy"},
		{name: "Sessions", method: "GET", path: "/v1/sprites/" + name + "/exec", wantStatus: 200, wantBody: `"sessions":[`},
		{name: "Taken", method: "POST", path: "/v1/sprites", body: `{"name":"` + name + `"}`, ct: "application/json", wantStatus: 400, wantBody: "already exists"},
		{name: "Unauthorized", method: "GET", path: "/v1/sprites/" + name, token: "wrong", wantStatus: 401, wantBody: `"error":"unauthorized"`},
	}
	resp, body = call(t, s, http.MethodPut, "/v1/sprites/"+name+"/fs/write?path=/home/sprite/x/f.txt&workingDir=/&mode=0640&mkdir=true", tok, []byte("hello"), "application/octet-stream")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.JSONEq(t, `{"path":"/home/sprite/x/f.txt","size":5,"mode":"0640"}`, string(body))

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b []byte
			if tt.body != "" {
				b = []byte(tt.body)
			}
			token := tt.token
			if token == "" {
				token = tok
			}
			resp, body := call(t, s, tt.method, tt.path, token, b, tt.ct)
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			require.Contains(t, string(body), tt.wantBody)
			if tt.wantStatus >= 400 && tt.method != http.MethodHead {
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			}
		})
	}
}

func TestServerFaultsEndpointAndKillNDJSON(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	s := NewServer(t, Options{})
	resp, body := call(t, s, http.MethodPost, "/_fake/faults", s.Token(), []byte(`{"create_rate_limited":1,"retry_after_seconds":4}`), "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(t, Faults{CreateRateLimited: 1, RetryAfterSeconds: 4}, s.Faults())
	resp, body = call(t, s, http.MethodPost, "/_fake/faults", s.Token(), []byte(`{"nope":1}`), "application/json")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))

	resp, body = call(t, s, http.MethodPost, "/v1/sprites", s.Token(), []byte(`{"name":"faulty"}`), "application/json")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "4", resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), `"retry_after_seconds":4`)

	c := s.Client()
	_, err := c.Create(ctx, "faulty")
	require.NoError(t, err)
	ex, err := c.Exec(ctx, "faulty", sprites.ExecRequest{Argv: []string{"sleep", "300"}})
	require.NoError(t, err)
	defer ex.Close()

	resp, body = call(t, s, http.MethodPost, "/v1/sprites/faulty/exec/"+ex.ID()+"/kill?signal=SIGTERM&timeout=10s", s.Token(), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var types []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var ev struct {
			Type     string `json:"type"`
			ExitCode *int   `json:"exit_code"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
		types = append(types, ev.Type)
		if ev.Type == "exited" {
			require.Equal(t, 143, *ev.ExitCode)
		}
	}
	require.Equal(t, []string{"signal", "exited", "complete"}, types)
	resp, _ = call(t, s, http.MethodPost, "/v1/sprites/faulty/exec/"+ex.ID()+"/kill", s.Token(), nil, "")
	require.Equal(t, http.StatusGone, resp.StatusCode)

	resp, body = call(t, s, http.MethodGet, "/v1/sprites/faulty/exec", s.Token(), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), `"id":"`+ex.ID()+`"`)
	require.Contains(t, string(body), `"is_active":false`)

	resp, body = call(t, s, http.MethodGet, "/_fake/requests", s.Token(), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.Contains(string(body), `"path":"/v1/sprites/faulty/exec"`))
}

func TestServerNeverExitAndSlowFrames(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	s := NewServer(t, Options{})
	c := s.Client()
	_, err := c.Create(ctx, "slow")
	require.NoError(t, err)

	s.SetFaults(Faults{FrameDelayMS: 1, NeverExit: true})
	ex, err := c.Exec(ctx, "slow", sprites.ExecRequest{Argv: []string{"echo", "hi"}})
	require.NoError(t, err)
	ev, err := ex.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "hi\n", string(ev.Data))
	// The command has ended but no exit arrives: the caller's context
	// bounds the wait. Kill reports the command as already gone (410).
	require.NoError(t, c.Kill(ctx, "slow", ex.ID(), "TERM"))
	short, cancel := context.WithCancel(ctx)
	cancel()
	_, err = ex.Next(short)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, ex.Close())
}

func TestListenAndServe(t *testing.T) {
	t.Parallel()

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *Server, 1)
	done := make(chan error, 1)
	go func() {
		done <- ListenAndServe(ctx, "127.0.0.1:0", "standalone-token", Options{
			Dir:     t.TempDir(),
			Logger:  slog.New(slog.DiscardHandler),
			OnStart: func(s *Server) { started <- s },
		})
	}()
	var s *Server
	select {
	case s = <-started:
	case err := <-done:
		t.Fatalf("ListenAndServe: %v", err)
	}
	require.Equal(t, "standalone-token", s.Token())
	resp, body := call(t, s, http.MethodGet, "/v1/sprites", "standalone-token", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	resp, _ = call(t, s, http.MethodGet, "/v1/sprites", "", nil, "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	cancel()
	require.NoError(t, <-done)
}
