package sprites_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
	"github.com/aodhq/aod/sprites/spritestest"
)

func TestMain(m *testing.M) {
	runner.MaybeRunShim()
	os.Exit(m.Run())
}

// sleepRecorder records retry delays without waiting.
type sleepRecorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *sleepRecorder) Delays() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.delays...)
}

func countRequests(s *spritestest.Server, method, path string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// drain reads an Exec to its exit.
func drain(ctx context.Context, t *testing.T, ex sprites.Exec) (stdout, stderr []byte, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	for {
		ev, err := ex.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out.Bytes(), errb.Bytes(), code
		}
		require.NoError(t, err)
		switch {
		case ev.Exited:
			code = ev.ExitCode
		case ev.Stream == sprites.Stdout:
			out.Write(ev.Data)
		case ev.Stream == sprites.Stderr:
			errb.Write(ev.Data)
		}
	}
}

func TestClientAgainstFake(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	srv := spritestest.NewServer(t, spritestest.Options{})

	type testBundle struct {
		client *sprites.Client
		sleeps *sleepRecorder
		name   string
	}
	var nameSeq sync.Mutex
	seq := 0
	setupOn := func(t *testing.T, srv *spritestest.Server, opts ...sprites.ClientOption) *testBundle {
		t.Helper()
		rec := &sleepRecorder{}
		nameSeq.Lock()
		seq++
		name := fmt.Sprintf("ct%d-%s", seq, strings.ToLower(t.Name()[strings.LastIndex(t.Name(), "/")+1:]))
		nameSeq.Unlock()
		name = name[:min(len(name), 60)]
		opts = append([]sprites.ClientOption{sprites.WithSleep(rec.sleep)}, opts...)
		return &testBundle{client: srv.Client(opts...), sleeps: rec, name: name}
	}
	setup := func(t *testing.T, opts ...sprites.ClientOption) *testBundle {
		t.Helper()
		return setupOn(t, srv, opts...)
	}

	t.Run("Check", func(t *testing.T) {
		t.Parallel()
		err := sprites.NewClient(srv.URL(), "").Check(ctx)
		require.ErrorContains(t, err, "SPRITES_API_KEY is not set")
		require.NoError(t, srv.Client().Check(ctx))
	})

	// The fault tests share a server's fault state, so they run in one
	// sequence on their own server.
	t.Run("Faults", func(t *testing.T) {
		t.Parallel()
		srv := spritestest.NewServer(t, spritestest.Options{})
		setup := func(t *testing.T, opts ...sprites.ClientOption) *testBundle {
			t.Helper()
			return setupOn(t, srv, opts...)
		}

		t.Run("RateLimitedCreateRetried", func(t *testing.T) {
			b := setup(t)
			srv.SetFaults(spritestest.Faults{CreateRateLimited: 2, RetryAfterSeconds: 3})
			before := countRequests(srv, http.MethodPost, "/v1/sprites")
			info, err := b.client.Create(ctx, b.name)
			require.NoError(t, err)
			require.Equal(t, b.name, info.Name)
			require.NotEmpty(t, info.ID)
			require.Equal(t, []time.Duration{3 * time.Second, 3 * time.Second}, b.sleeps.Delays())
			require.Equal(t, 3, countRequests(srv, http.MethodPost, "/v1/sprites")-before)
			require.NoError(t, b.client.Delete(ctx, b.name))
		})

		t.Run("RateLimitExhausted", func(t *testing.T) {
			b := setup(t, sprites.WithRetryPolicy(sprites.RetryPolicy{MaxAttempts: 3, MaxWait: time.Minute}))
			srv.SetFaults(spritestest.Faults{CreateRateLimited: 5, RetryAfterSeconds: 2})
			_, err := b.client.Create(ctx, b.name)
			require.ErrorIs(t, err, sprites.ErrRateLimited)
			var apiErr *sprites.Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, 2*time.Second, apiErr.RetryAfter)
			require.Equal(t, "sprite_creation_rate_limited", apiErr.Code)
			require.Len(t, b.sleeps.Delays(), 2)
			srv.SetFaults(spritestest.Faults{})
		})

		t.Run("RetryTotalWaitCapped", func(t *testing.T) {
			b := setup(t, sprites.WithRetryPolicy(sprites.RetryPolicy{MaxAttempts: 10, MaxWait: 5 * time.Second, MaxDelay: time.Minute}))
			srv.SetFaults(spritestest.Faults{CreateRateLimited: 9, RetryAfterSeconds: 2})
			_, err := b.client.Create(ctx, b.name)
			require.ErrorIs(t, err, sprites.ErrRateLimited)
			require.Equal(t, []time.Duration{2 * time.Second, 2 * time.Second}, b.sleeps.Delays())
			srv.SetFaults(spritestest.Faults{})
		})

		t.Run("ServerErrorsRetriedBounded", func(t *testing.T) {
			b := setup(t, sprites.WithRetryPolicy(sprites.RetryPolicy{MaxAttempts: 3, MaxWait: time.Minute, BaseDelay: 100 * time.Millisecond}))
			srv.SetFaults(spritestest.Faults{ServerErrors: 10, ServerErrorStatus: 502})
			_, err := b.client.Create(ctx, b.name)
			var apiErr *sprites.Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, 502, apiErr.Status)
			delays := b.sleeps.Delays()
			require.Len(t, delays, 2)
			require.LessOrEqual(t, delays[0], 100*time.Millisecond)
			require.Greater(t, delays[1], delays[0]/2) // backoff grows (with jitter)
			require.Equal(t, 7, srv.Faults().ServerErrors)

			srv.SetFaults(spritestest.Faults{ServerErrors: 2})
			_, err = b.client.Create(ctx, b.name)
			require.NoError(t, err)
			require.NoError(t, b.client.Delete(ctx, b.name))
		})

		t.Run("UnauthorizedNotRetried", func(t *testing.T) {
			b := setup(t)
			bad := sprites.NewClient(srv.URL(), "wrong-token", sprites.WithSleep(b.sleeps.sleep))
			before := countRequests(srv, http.MethodPost, "/v1/sprites")
			_, err := bad.Create(ctx, b.name)
			require.ErrorIs(t, err, sprites.ErrUnauthorized)
			require.Equal(t, 1, countRequests(srv, http.MethodPost, "/v1/sprites")-before)
			require.Empty(t, b.sleeps.Delays())
		})

		t.Run("DroppedStreamReattachedExactlyOnce", func(t *testing.T) {
			b := setup(t, sprites.WithReattach(6, time.Millisecond))
			_, err := b.client.Create(ctx, b.name)
			require.NoError(t, err)
			defer b.client.Delete(ctx, b.name)

			data := make([]byte, 3<<20)
			_, _ = rand.Read(data)
			require.NoError(t, b.client.WriteFile(ctx, b.name, "/home/sprite/data.bin", data, 0o644))
			// The exec connection and the first re-attach (which replays
			// from byte 0) each drop after 5 frames; the second re-attach
			// streams to the end.
			srv.SetFaults(spritestest.Faults{DropExecs: 2, DropAfterFrames: 5})
			ex, err := b.client.Exec(ctx, b.name, sprites.ExecRequest{Argv: []string{"bash", "-c", "cat data.bin; echo done >&2"}})
			require.NoError(t, err)
			defer ex.Close()
			stdout, stderr, code := drain(ctx, t, ex)
			require.Equal(t, 0, code)
			require.Equal(t, sha256.Sum256(data), sha256.Sum256(stdout))
			require.Equal(t, "done\n", string(stderr))
			require.Equal(t, sprites.Offsets{Stdout: int64(len(data)), Stderr: 5}, ex.Offsets())
			require.GreaterOrEqual(t, countRequests(srv, http.MethodGet, "/v1/sprites/"+b.name+"/exec/"+ex.ID()), 2)
			srv.SetFaults(spritestest.Faults{})
		})
	})

	t.Run("ExecStdinAndExitCode", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Create(ctx, b.name)
		require.NoError(t, err)
		defer b.client.Delete(ctx, b.name)

		in := bytes.Repeat([]byte("0123456789abcdef"), 10000) // > one stdin frame
		ex, err := b.client.Exec(ctx, b.name, sprites.ExecRequest{Argv: []string{"bash", "-c", "sha256sum; exit 7"}, Stdin: in})
		require.NoError(t, err)
		defer ex.Close()
		require.NotEmpty(t, ex.ID())
		stdout, _, code := drain(ctx, t, ex)
		require.Equal(t, 7, code)
		sum := sha256.Sum256(in)
		require.Contains(t, string(stdout), hexString(sum[:]))
		_, err = ex.Next(ctx)
		require.ErrorIs(t, err, io.EOF)
	})

	t.Run("GetDeleteNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Get(ctx, b.name)
		require.ErrorIs(t, err, sprites.ErrNotFound)
		require.ErrorIs(t, b.client.Delete(ctx, b.name), sprites.ErrNotFound)
		_, err = b.client.Exec(ctx, b.name, sprites.ExecRequest{Argv: []string{"true"}})
		require.ErrorIs(t, err, sprites.ErrNotFound)
	})

	t.Run("KillAndKillExited", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Create(ctx, b.name)
		require.NoError(t, err)
		defer b.client.Delete(ctx, b.name)

		ex, err := b.client.Exec(ctx, b.name, sprites.ExecRequest{Argv: []string{"bash", "-c", "echo ready; exec sleep 300"}})
		require.NoError(t, err)
		defer ex.Close()
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, "ready\n", string(ev.Data))
		require.NoError(t, b.client.Kill(ctx, b.name, ex.ID(), "TERM"))
		_, _, code := drain(ctx, t, ex)
		require.Equal(t, 143, code)
		require.NoError(t, b.client.Kill(ctx, b.name, ex.ID(), "SIGTERM"), "410 is success")
		require.ErrorIs(t, b.client.Kill(ctx, b.name, "nosuchexec", "TERM"), sprites.ErrNotFound)
	})

	t.Run("PolicyRulesInOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Create(ctx, b.name)
		require.NoError(t, err)
		defer b.client.Delete(ctx, b.name)

		policies := []sprites.NetworkPolicy{
			{Rules: []sprites.Rule{{Domain: "api.anthropic.com", Action: "allow"}, {Domain: "*.github.com", Action: "allow"}, {Domain: "*", Action: "deny"}}},
			{Rules: []sprites.Rule{{Include: "defaults"}, {Domain: "*", Action: "deny"}}},
			{Rules: []sprites.Rule{{Domain: "*", Action: "deny"}}},
		}
		for _, p := range policies {
			require.NoError(t, b.client.SetNetworkPolicy(ctx, b.name, p))
		}
		require.Equal(t, policies, srv.Policies(b.name))

		err = b.client.SetNetworkPolicy(ctx, b.name, sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "bad domain", Action: "allow"}}})
		var apiErr *sprites.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusBadRequest, apiErr.Status)

		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL()+"/v1/sprites/"+b.name+"/policy/network", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+srv.Token())
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var got sprites.NetworkPolicy
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
		require.Equal(t, policies[2], got)
	})
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// rawServer is a minimal exec WebSocket server that runs script on each
// connection.
func rawServer(t testing.TB, script func(ctx context.Context, r *http.Request, c *websocket.Conn)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		script(r.Context(), r, c)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClientExecProtocol(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	text := func(s string) func(ctx context.Context, c *websocket.Conn) error {
		return func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte(s))
		}
	}
	bin := func(b ...byte) func(ctx context.Context, c *websocket.Conn) error {
		return func(ctx context.Context, c *websocket.Conn) error { return c.Write(ctx, websocket.MessageBinary, b) }
	}
	info := text(`{"type":"session_info","session_id":4242,"command":"x","tty":false}`)

	tests := []struct {
		name     string
		send     []func(ctx context.Context, c *websocket.Conn) error
		wantOut  string
		wantCode int
		wantErr  error
	}{
		{name: "BinaryExit", send: []func(context.Context, *websocket.Conn) error{info, bin(1, 'h', 'i'), bin(3, 5)}, wantOut: "hi", wantCode: 5},
		{name: "BinaryExitEmptyPayload", send: []func(context.Context, *websocket.Conn) error{info, bin(3)}, wantCode: 0},
		{name: "ControlAndPortIgnored", send: []func(context.Context, *websocket.Conn) error{info, text(`control:{"type":"x"}`), text(`{"type":"port_opened","port":8080,"address":"0.0.0.0","pid":3}`), bin(1, 'a'), bin(3, 0)}, wantOut: "a"},
		{name: "EmptyBinaryFrame", send: []func(context.Context, *websocket.Conn) error{info, bin()}, wantErr: sprites.ErrMalformedFrame},
		{name: "JSONExit", send: []func(context.Context, *websocket.Conn) error{info, bin(1, 'o', 'k'), text(`{"type":"exit","exit_code":3}`)}, wantOut: "ok", wantCode: 3},
		{name: "MalformedJSON", send: []func(context.Context, *websocket.Conn) error{info, text(`{"type":`)}, wantErr: sprites.ErrMalformedFrame},
		{name: "UnknownStreamID", send: []func(context.Context, *websocket.Conn) error{info, bin(7, 1, 2)}, wantErr: sprites.ErrMalformedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			type received struct {
				query url.Values
				auth  string
				msgs  [][]byte
			}
			got := make(chan received, 1)
			srv := rawServer(t, func(ctx context.Context, r *http.Request, c *websocket.Conn) {
				rec := received{query: r.URL.Query(), auth: r.Header.Get("Authorization")}
				for {
					_, msg, err := c.Read(ctx)
					if err != nil {
						break
					}
					rec.msgs = append(rec.msgs, msg)
					if len(msg) > 0 && msg[0] == sprites.FrameStdinEOF {
						break
					}
				}
				got <- rec
				for _, f := range tt.send {
					if f(ctx, c) != nil {
						return
					}
				}
				_ = c.Close(websocket.StatusNormalClosure, "")
			})
			client := sprites.NewClient(srv.URL, "tok", sprites.WithReattach(0, time.Millisecond))
			ex, err := client.Exec(ctx, "sb", sprites.ExecRequest{Argv: []string{"cat", "-"}, Dir: "/workspace", Stdin: []byte("in")})
			require.NoError(t, err)
			defer ex.Close()

			rec := <-got
			require.Equal(t, "Bearer tok", rec.auth)
			require.Equal(t, []string{"cat", "-"}, rec.query["cmd"])
			require.Equal(t, "cat", rec.query.Get("path"))
			require.Equal(t, "/workspace", rec.query.Get("dir"))
			require.Equal(t, "true", rec.query.Get("stdin"))
			require.Equal(t, "24h0m0s", rec.query.Get("max_run_after_disconnect"))
			require.Equal(t, [][]byte{{0, 'i', 'n'}, {4}}, rec.msgs)

			var out bytes.Buffer
			for {
				ev, err := ex.Next(ctx)
				if tt.wantErr != nil && err != nil {
					require.ErrorIs(t, err, tt.wantErr)
					return
				}
				require.NoError(t, err)
				if ev.Exited {
					require.Nil(t, tt.wantErr)
					require.Equal(t, tt.wantCode, ev.ExitCode)
					break
				}
				out.Write(ev.Data)
			}
			require.Equal(t, tt.wantOut, out.String())
			require.Equal(t, "4242", ex.ID())
			_, err = ex.Next(ctx)
			require.ErrorIs(t, err, io.EOF)
		})
	}

	t.Run("NoStdinSendsEOFAtOnce", func(t *testing.T) {
		t.Parallel()
		msgs := make(chan []byte, 1)
		srv := rawServer(t, func(ctx context.Context, r *http.Request, c *websocket.Conn) {
			_, msg, err := c.Read(ctx)
			if err == nil {
				msgs <- msg
			}
			_ = info(ctx, c)
			_ = c.Write(ctx, websocket.MessageBinary, []byte{3, 0})
			_ = c.Close(websocket.StatusNormalClosure, "")
		})
		ex, err := sprites.NewClient(srv.URL, "tok").Exec(ctx, "sb", sprites.ExecRequest{Argv: []string{"true"}})
		require.NoError(t, err)
		defer ex.Close()
		require.Equal(t, []byte{4}, <-msgs)
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		require.True(t, ev.Exited)
	})

	t.Run("ReattachSkipsReplayedBytes", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		var paths []string
		srv := rawServer(t, func(ctx context.Context, r *http.Request, c *websocket.Conn) {
			mu.Lock()
			paths = append(paths, r.URL.Path)
			n := len(paths)
			mu.Unlock()
			_ = info(ctx, c)
			if n == 1 {
				_ = c.Write(ctx, websocket.MessageBinary, []byte("\x01abc"))
				_ = c.Write(ctx, websocket.MessageBinary, []byte("\x02E1"))
				_ = c.Write(ctx, websocket.MessageBinary, []byte("\x01de"))
				return // dropped without exit
			}
			// The replay is chunked differently from the first delivery.
			_ = c.Write(ctx, websocket.MessageBinary, []byte("\x01abcdefg"))
			_ = c.Write(ctx, websocket.MessageBinary, []byte("\x02E1E2"))
			_ = c.Write(ctx, websocket.MessageBinary, []byte("\x01h"))
			_ = c.Write(ctx, websocket.MessageBinary, []byte{3, 9})
			_ = c.Close(websocket.StatusNormalClosure, "")
		})
		ex, err := sprites.NewClient(srv.URL, "tok", sprites.WithReattach(3, time.Millisecond)).
			Exec(ctx, "sb", sprites.ExecRequest{Argv: []string{"true"}})
		require.NoError(t, err)
		defer ex.Close()
		var events []string
		for {
			ev, err := ex.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			if ev.Exited {
				events = append(events, fmt.Sprintf("exit %d", ev.ExitCode))
				continue
			}
			events = append(events, ev.Stream.String()+":"+string(ev.Data))
		}
		require.Equal(t, []string{"stdout:abc", "stderr:E1", "stdout:de", "stdout:fg", "stderr:E2", "stdout:h", "exit 9"}, events)
		require.Equal(t, sprites.Offsets{Stdout: 8, Stderr: 4}, ex.Offsets())
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []string{"/v1/sprites/sb/exec", "/v1/sprites/sb/exec/4242"}, paths)
	})

	t.Run("KeepaliveDropsDeadConnection", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		var mu sync.Mutex
		var paths []string
		srv := rawServer(t, func(ctx context.Context, r *http.Request, c *websocket.Conn) {
			mu.Lock()
			paths = append(paths, r.URL.Path)
			first := len(paths) == 1
			mu.Unlock()
			if first {
				_, _, _ = c.Read(ctx) // stdin EOF
				_ = info(ctx, c)
				// Stop reading: pings go unanswered.
				<-release
				return
			}
			_ = info(ctx, c)
			_ = c.Write(ctx, websocket.MessageBinary, []byte{3, 0})
			_ = c.Close(websocket.StatusNormalClosure, "")
		})
		t.Cleanup(func() { close(release) })
		client := sprites.NewClient(srv.URL, "tok", sprites.WithKeepalive(20*time.Millisecond, 50*time.Millisecond), sprites.WithReattach(3, time.Millisecond))
		ex, err := client.Exec(ctx, "sb", sprites.ExecRequest{Argv: []string{"x"}})
		require.NoError(t, err)
		defer ex.Close()
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		require.True(t, ev.Exited)
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []string{"/v1/sprites/sb/exec", "/v1/sprites/sb/exec/4242"}, paths)
	})

	t.Run("LostWithoutReattachIsTransportLost", func(t *testing.T) {
		t.Parallel()
		srv := rawServer(t, func(ctx context.Context, r *http.Request, c *websocket.Conn) {
			if strings.HasSuffix(r.URL.Path, "/exec") {
				_ = info(ctx, c)
				_ = c.Write(ctx, websocket.MessageBinary, []byte{1, 'x'})
			}
			// Attach attempts (and the first connection) end without exit.
		})
		rec := &sleepRecorder{}
		ex, err := sprites.NewClient(srv.URL, "tok", sprites.WithReattach(3, time.Millisecond), sprites.WithSleep(rec.sleep)).
			Exec(ctx, "sb", sprites.ExecRequest{Argv: []string{"true"}})
		require.NoError(t, err)
		defer ex.Close()
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, "x", string(ev.Data))
		_, err = ex.Next(ctx)
		require.ErrorIs(t, err, sprites.ErrTransportLost)
		require.Len(t, rec.Delays(), 3)
		require.Equal(t, sprites.Offsets{Stdout: 1}, ex.Offsets())
	})
}
