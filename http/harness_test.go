package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	aodhttp "github.com/aodhq/aod/http"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testEnv is one API server on a real loopback socket.
type testEnv struct {
	t    *testing.T
	db   *persistence.DB
	base string
	logs *syncBuffer
	// bodies collects every response body, for the secrets test.
	mu     sync.Mutex
	bodies []string
}

type envOpts struct {
	maxBody int
	checks  []aodhttp.Checker
	// sessions and config, when set, replace the defaults (stream tests).
	sessions aodhttp.Sessions
	config   *aodhttp.Config
}

func newEnv(t *testing.T, db *persistence.DB, opts ...envOpts) *testEnv {
	t.Helper()
	var o envOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	logs := &syncBuffer{}
	cfg := aodhttp.Config{MaxBodyBytes: o.maxBody}
	if o.config != nil {
		cfg = *o.config
	}
	srv := aodhttp.New(aodhttp.Deps{
		DB:       db,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Config:   cfg,
		Checks:   o.checks,
		Sessions: o.sessions,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &testEnv{t: t, db: db, base: "http://" + ln.Addr().String(), logs: logs}
}

// user creates a fresh user with an active key and returns the raw key.
func (e *testEnv) user() (string, *persistence.User) {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.db.UserCreate(ctx, "user-"+persistence.NewUUID())
	require.NoError(e.t, err)
	raw, _, err := e.db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, Name: "test"})
	require.NoError(e.t, err)
	return raw, u
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), string(r.body))
	return m
}

// do sends a request. body may be nil, a string/[]byte (sent raw) or any
// value (sent as JSON).
func (e *testEnv) do(method, path, key string, body any, headers ...string) *response {
	e.t.Helper()
	var rdr io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rdr = strings.NewReader(b)
	case []byte:
		rdr = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(e.t, err)
		rdr = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, rdr)
	require.NoError(e.t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rdr != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	e.mu.Lock()
	e.bodies = append(e.bodies, string(b))
	e.mu.Unlock()
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *testEnv) allBodies() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.bodies, "\n")
}

// eachEnv runs fn against a server on Postgres and on SQLite.
func eachEnv(t *testing.T, fn func(t *testing.T, e *testEnv)) {
	t.Helper()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) { fn(t, newEnv(t, db)) })
}
