package spritestest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
)

// Conformance of the fake with the Sprites protocol as the official Go SDK
// uses it (issue 9 defect 12), checked with raw HTTP and WebSocket calls
// (the SDK itself is not on the module proxy).

func createSprite(t *testing.T, s *Server, body string) map[string]any {
	t.Helper()
	resp, b := call(t, s, http.MethodPost, "/v1/sprites", s.Token(), []byte(body), "application/json")
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(b))
	var obj map[string]any
	require.NoError(t, json.Unmarshal(b, &obj))
	return obj
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var obj map[string]any
	require.NoError(t, json.Unmarshal(b, &obj), string(b))
	return obj
}

func TestFaithfulLabels(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	obj := createSprite(t, s, `{"name":"lab-sprite","labels":["team-a","ci"]}`)
	require.Equal(t, []any{"team-a", "ci"}, obj["labels"], "create keeps the labels")
	resp, b := call(t, s, http.MethodGet, "/v1/sprites/lab-sprite", s.Token(), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []any{"team-a", "ci"}, decode(t, b)["labels"])

	resp, b = call(t, s, http.MethodPut, "/v1/sprites/lab-sprite", s.Token(), []byte(`{"labels":["x"]}`), "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.Equal(t, []any{"x"}, decode(t, b)["labels"], "update replaces the labels")
	resp, b = call(t, s, http.MethodPut, "/v1/sprites/lab-sprite", s.Token(), []byte(`{"url_settings":{"auth":"public"}}`), "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []any{"x"}, decode(t, b)["labels"], "an update without labels keeps them")
	resp, b = call(t, s, http.MethodPut, "/v1/sprites/lab-sprite", s.Token(), []byte(`{"clear_labels":true}`), "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []any{}, decode(t, b)["labels"], "clear_labels removes them")
}

func TestFaithfulListPaging(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	var want []string
	for i := range 5 {
		name := "page-" + strconv.Itoa(i)
		createSprite(t, s, `{"name":"`+name+`"}`)
		want = append(want, name)
	}
	createSprite(t, s, `{"name":"other"}`)
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5, "paging terminates")
		q := url.Values{"prefix": {"page-"}, "max_results": {"2"}}
		if token != "" {
			q.Set("continuation_token", token)
		}
		resp, b := call(t, s, http.MethodGet, "/v1/sprites?"+q.Encode(), s.Token(), nil, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		var page struct {
			Sprites []struct {
				Name string `json:"name"`
			} `json:"sprites"`
			HasMore bool   `json:"has_more"`
			Next    string `json:"next_continuation_token"`
		}
		require.NoError(t, json.Unmarshal(b, &page))
		require.LessOrEqual(t, len(page.Sprites), 2, "max_results bounds a page")
		for _, sp := range page.Sprites {
			got = append(got, sp.Name)
		}
		if !page.HasMore {
			require.Empty(t, page.Next)
			break
		}
		require.NotEmpty(t, page.Next)
		token = page.Next
	}
	sort.Strings(got)
	require.Equal(t, want, got, "every sprite exactly once")
	for _, bad := range []string{"0", "-1", "x", "101"} {
		resp, _ := call(t, s, http.MethodGet, "/v1/sprites?max_results="+bad, s.Token(), nil, "")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "max_results=%s", bad)
	}
}

func TestFaithfulReadDir(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	createSprite(t, s, `{"name":"dir-sprite"}`)
	c := s.Client()
	for _, f := range []string{"/home/sprite/d/b.txt", "/home/sprite/d/a.txt", "/home/sprite/d/sub/c.txt"} {
		require.NoError(t, c.WriteFile(t.Context(), "dir-sprite", f, []byte("x"), 0o644))
	}
	resp, b := call(t, s, http.MethodGet, "/v1/sprites/dir-sprite/fs/list?path=/home/sprite/d&workingDir=/", s.Token(), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	var list struct {
		Path    string `json:"path"`
		Count   int    `json:"count"`
		Entries []struct {
			Name  string `json:"name"`
			Path  string `json:"path"`
			Type  string `json:"type"`
			IsDir bool   `json:"isDir"`
		} `json:"entries"`
	}
	require.NoError(t, json.Unmarshal(b, &list))
	require.Equal(t, 3, list.Count, "a directory lists its children, not itself")
	var names []string
	for _, e := range list.Entries {
		names = append(names, e.Name+":"+e.Path+":"+e.Type)
	}
	require.Equal(t, []string{"a.txt:/home/sprite/d/a.txt:file", "b.txt:/home/sprite/d/b.txt:file", "sub:/home/sprite/d/sub:directory"}, names)
	// A file path gives the file's own entry (the SDK's Stat).
	resp, b = call(t, s, http.MethodGet, "/v1/sprites/dir-sprite/fs/list?path=/home/sprite/d/a.txt&workingDir=/", s.Token(), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.Unmarshal(b, &list))
	require.Equal(t, 1, list.Count)
	require.Equal(t, "a.txt", list.Entries[0].Name)
}

func TestFaithfulRateLimitHeaders(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	s.SetFaults(Faults{CreateRateLimited: 1, RetryAfterSeconds: 7})
	before := time.Now().Unix()
	resp, b := call(t, s, http.MethodPost, "/v1/sprites", s.Token(), []byte(`{"name":"rl-sprite"}`), "application/json")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(b))
	require.Equal(t, "7", resp.Header.Get("Retry-After"))
	require.Equal(t, "10", resp.Header.Get("X-RateLimit-Limit"))
	require.Equal(t, "0", resp.Header.Get("X-RateLimit-Remaining"))
	reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
	require.NoError(t, err, "X-RateLimit-Reset is a unix time")
	require.GreaterOrEqual(t, reset, before+7)
}

// dialExec opens an exec WebSocket with raw query parameters.
func dialExec(t *testing.T, s *Server, name string, q url.Values) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := strings.Replace(s.URL(), "http://", "ws://", 1) + "/v1/sprites/" + name + "/exec?" + q.Encode()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + s.Token()}}})
}

// readUntil reads messages until pred is true for one, returning it.
func readUntil(t *testing.T, conn *websocket.Conn, d time.Duration, pred func(websocket.MessageType, []byte) bool) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	for {
		typ, msg, err := conn.Read(ctx)
		require.NoError(t, err)
		if pred(typ, msg) {
			return msg
		}
	}
}

func isSessionInfo(typ websocket.MessageType, msg []byte) bool {
	return typ == websocket.MessageText && strings.Contains(string(msg), `"session_info"`)
}

func TestFaithfulInteractiveStdin(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	createSprite(t, s, `{"name":"stdin-sprite"}`)
	conn, _, err := dialExec(t, s, "stdin-sprite", url.Values{"cmd": {"cat"}, "path": {"cat"}, "stdin": {"true"}})
	require.NoError(t, err)
	defer conn.CloseNow()
	// session_info arrives before the client has sent anything.
	readUntil(t, conn, 10*time.Second, isSessionInfo)
	ctx := t.Context()
	// Each line is echoed while stdin is still open.
	for _, line := range []string{"one\n", "two\n"} {
		require.NoError(t, conn.Write(ctx, websocket.MessageBinary, append([]byte{sprites.FrameStdin}, line...)))
		got := readUntil(t, conn, 10*time.Second, func(typ websocket.MessageType, msg []byte) bool {
			return typ == websocket.MessageBinary && len(msg) > 0 && msg[0] == sprites.FrameStdout
		})
		require.Equal(t, line, string(got[1:]))
	}
	require.NoError(t, conn.Write(ctx, websocket.MessageBinary, []byte{sprites.FrameStdinEOF}))
	exit := readUntil(t, conn, 10*time.Second, func(typ websocket.MessageType, msg []byte) bool {
		return typ == websocket.MessageBinary && len(msg) > 0 && msg[0] == sprites.FrameExit
	})
	require.Equal(t, []byte{sprites.FrameExit, 0}, exit, "EOF ends cat with 0")
}

func TestFaithfulTTYWithoutEOF(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	createSprite(t, s, `{"name":"tty-sprite"}`)
	// A TTY client never sends EOF: it gets session_info and output at
	// once, and the command's exit as a JSON message.
	conn, _, err := dialExec(t, s, "tty-sprite", url.Values{"cmd": {"bash", "-c", "echo ready; read line; echo got:$line"}, "path": {"bash"}, "tty": {"true"}})
	require.NoError(t, err)
	defer conn.CloseNow()
	info := readUntil(t, conn, 10*time.Second, isSessionInfo)
	require.True(t, decode(t, info)["tty"].(bool))
	readUntil(t, conn, 10*time.Second, func(typ websocket.MessageType, msg []byte) bool {
		return typ == websocket.MessageBinary && strings.Contains(string(msg), "ready")
	})
	require.NoError(t, conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"resize","cols":100,"rows":30}`)))
	require.NoError(t, conn.Write(t.Context(), websocket.MessageBinary, []byte("hi\n")), "TTY input is raw bytes")
	readUntil(t, conn, 10*time.Second, func(typ websocket.MessageType, msg []byte) bool {
		return typ == websocket.MessageBinary && strings.Contains(string(msg), "got:hi")
	})
	exit := readUntil(t, conn, 10*time.Second, func(typ websocket.MessageType, msg []byte) bool {
		return typ == websocket.MessageText && strings.Contains(string(msg), `"exit"`)
	})
	require.Equal(t, float64(0), decode(t, exit)["exit_code"])
}

func TestFaithfulExecEnv(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	createSprite(t, s, `{"name":"env-sprite"}`)
	conn, _, err := dialExec(t, s, "env-sprite", url.Values{"cmd": {"/usr/bin/env"}, "path": {"/usr/bin/env"},
		"env": {"FOO=bar", "EMPTY="}, "stdin": {"false"}})
	require.NoError(t, err, "env= is accepted")
	defer conn.CloseNow()
	var out strings.Builder
	readUntil(t, conn, 10*time.Second, func(typ websocket.MessageType, msg []byte) bool {
		if typ == websocket.MessageBinary && len(msg) > 0 && msg[0] == sprites.FrameStdout {
			out.Write(msg[1:])
		}
		return typ == websocket.MessageBinary && len(msg) > 0 && msg[0] == sprites.FrameExit
	})
	// bubblewrap's --chdir adds PWD; nothing of the default environment
	// (PATH, HOME, USER, …) survives.
	require.Equal(t, "FOO=bar\nEMPTY=\nPWD=/home/sprite\n", out.String(), "env= replaces the whole environment")
	_, resp, err := dialExec(t, s, "env-sprite", url.Values{"cmd": {"true"}, "env": {"NOEQUALS"}})
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "an entry without = is refused")
}
