package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/runtimes/runtimestest"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/local"
	"github.com/aodhq/aod/sprites/runner"
	"github.com/aodhq/aod/sprites/spritestest"
)

// fixtures are the host-side files bound into every test sandbox: the
// stand-in executables at /usr/local/bin, a bare git repository for
// https://github.com/acme/widgets, and a system git config that redirects
// GitHub URLs to it.
type fixtures struct {
	binds []runner.Bind
}

var (
	fixturesOnce sync.Once
	fixturesVal  *fixtures
	fixturesErr  error
)

const testRepoDir = "/opt/aod-test-repos"

func sandboxFixtures(t *testing.T) *fixtures {
	t.Helper()
	fixturesOnce.Do(func() { fixturesVal, fixturesErr = buildFixtures() })
	require.NoError(t, fixturesErr)
	return fixturesVal
}

func buildFixtures() (*fixtures, error) {
	dir, err := os.MkdirTemp("", "aod-fixtures-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "bin")
	if err := runtimestest.WriteStandins(bin); err != nil {
		return nil, err
	}
	repos := filepath.Join(dir, "repos")
	work := filepath.Join(dir, "work")
	bare := filepath.Join(repos, "acme", "widgets")
	for _, args := range [][]string{
		{"init", "-q", "--bare", bare},
		{"init", "-q", work},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return nil, &cmdError{args, out, err}
		}
	}
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("widgets\n"), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-C", work, "add", "README.md"},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "readme"},
		{"-C", work, "push", "-q", bare, "HEAD:refs/heads/main"},
		{"-C", bare, "symbolic-ref", "HEAD", "refs/heads/main"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return nil, &cmdError{args, out, err}
		}
	}
	gitconfig := filepath.Join(dir, "gitconfig")
	cfg := "[url \"file://" + testRepoDir + "/\"]\n\tinsteadOf = https://github.com/\n[safe]\n\tdirectory = *\n"
	if err := os.WriteFile(gitconfig, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return &fixtures{binds: []runner.Bind{
		{Src: bin, Dst: "/usr/local/bin", ReadOnly: true},
		{Src: repos, Dst: testRepoDir, ReadOnly: true},
		{Src: gitconfig, Dst: "/etc/gitconfig", ReadOnly: true},
	}}, nil
}

type cmdError struct {
	args []string
	out  []byte
	err  error
}

func (e *cmdError) Error() string {
	return "git " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + string(e.out)
}

// backendKind names a sandbox backend under test.
type backendKind string

const (
	backendLocal backendKind = "local"
	backendFake  backendKind = "fake-sprites"
	// backendMem is the in-memory backend of the benchmarks: no processes,
	// each turn prints one line and exits 0 at once.
	backendMem backendKind = "memory"
)

// newBackend returns a sandbox backend with the fixtures bound in.
func newBackend(t *testing.T, kind backendKind, clientOpts ...sprites.ClientOption) (sprites.Backend, *spritestest.Server) {
	t.Helper()
	fx := sandboxFixtures(t)
	switch kind {
	case backendMem:
		return newMemBackend(false), nil
	case backendFake:
		dir := t.TempDir()
		srv := spritestest.NewServer(t, spritestest.Options{Dir: dir, RunnerConfig: runner.Config{ExtraBinds: fx.binds}})
		// After the node stops: close the fake (waiting for its requests)
		// and remove every sandbox it holds, including one a cancelled
		// create finished after its sprite was deleted.
		t.Cleanup(func() {
			_ = srv.Close()
			srv.DeleteAll(context.Background())
			if b, err := local.New(local.Config{Dir: filepath.Join(dir, "sandboxes")}); err == nil {
				deleteSandboxes(b, filepath.Join(dir, "sandboxes"))
			}
		})
		return srv.Client(clientOpts...), srv
	default:
		dir := filepath.Join(t.TempDir(), "sandboxes")
		b, err := local.New(local.Config{Dir: dir, ExtraBinds: fx.binds})
		require.NoError(t, err)
		require.NoError(t, b.Check(context.Background()))
		t.Cleanup(func() { deleteSandboxes(b, dir) })
		return b, nil
	}
}

// node is one aod node under test with a user and its key.
type node struct {
	t       *testing.T
	logs    *syncBuffer
	app     *App
	base    string
	key     string
	userID  int64
	backend sprites.Backend
	fake    *spritestest.Server
	raw     sprites.Backend // backend before nodeOpts.wrap
	cfg     *Config
	opts    Options
	logger  *slog.Logger
}

// execRunner is the process runner behind the node's sandboxes (local or
// fake Sprites), to inspect execs from the host side.
func (n *node) execRunner() *runner.Runner {
	n.t.Helper()
	if n.fake != nil {
		return n.fake.Runner
	}
	lb, ok := n.raw.(*local.Backend)
	require.True(n.t, ok, "no process runner behind %T", n.raw)
	return lb.Runner()
}

type nodeOpts struct {
	dialect migrations.Dialect
	backend backendKind
	env     map[string]string
	wrap    func(sprites.Backend) sprites.Backend
	actors  actors.Config
	// clientOpts configure the Sprites client of the fake-sprites backend.
	clientOpts []sprites.ClientOption
	// wrapStore wraps the store the session actors use (fault injection).
	wrapStore func(actors.Store) actors.Store
}

func startNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	env := map[string]string{
		"AOD_LISTEN":           "127.0.0.1:0",
		"AOD_DATA_DIR":         t.TempDir(),
		"FIELD_ENCRYPTION_KEY": persistencetest.TestKey,
		"AOD_SSE_HEARTBEAT":    "1s",
	}
	if o.dialect == migrations.Postgres {
		// A database per node: a node recovers every unfinished session in
		// its database, so test nodes must not share one.
		env["DATABASE_URL"] = persistencetest.FreshPostgresURL(t)
	}
	if o.backend == backendFake {
		// The session rows record the backend kind (the fake is Sprites).
		env["AOD_SANDBOX"] = "sprites"
	}
	for k, v := range o.env {
		env[k] = v
	}
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	require.NoError(t, err)
	backend, fake := newBackend(t, o.backend, o.clientOpts...)
	raw := backend
	if o.wrap != nil {
		backend = o.wrap(backend)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	opts := Options{Backend: backend, NodeName: "test", Actors: o.actors, WrapStore: o.wrapStore}
	a, err := New(ctx, cfg, logger, opts)
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	n := &node{t: t, logs: logs, app: a, base: "http://" + a.HTTPAddr(), backend: backend, raw: raw, fake: fake, cfg: cfg, opts: opts, logger: logger}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.app.Stop(sctx)
	})
	u, err := a.DB().UserCreate(ctx, "u-"+persistence.NewUUID())
	require.NoError(t, err)
	key, _, err := a.DB().APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID})
	require.NoError(t, err)
	n.key, n.userID = key, u.ID
	return n
}

// stop stops the node gracefully (agent processes keep running, D4).
func (n *node) stop() {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(n.t, n.app.Stop(ctx))
}

// restart starts a new node on the stopped one's database, data directory
// and backend, as a restart of aod does; it recovers unfinished sessions.
func (n *node) restart() {
	n.t.Helper()
	ctx := context.Background()
	a, err := New(ctx, n.cfg, n.logger, n.opts)
	require.NoError(n.t, err)
	require.NoError(n.t, a.Start(ctx))
	n.app, n.base = a, "http://"+a.HTTPAddr()
}

// testWriter sends warnings and errors to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("level=WARN")) || bytes.Contains(p, []byte("level=ERROR")) {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// syncBuffer collects everything the node logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// syncBufferMax bounds a node's collected log: past it the older half is
// dropped (a soak run logs millions of requests).
const syncBufferMax = 64 << 20

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len()+len(p) > syncBufferMax {
		keep := s.b.Bytes()[s.b.Len()/2:]
		s.b = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type apiResponse struct {
	status int
	body   []byte
}

func (r *apiResponse) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), string(r.body))
	return m
}

func (n *node) do(method, path string, body any) *apiResponse {
	n.t.Helper()
	var rdr io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(n.t, err)
		rdr = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.base+path, rdr)
	require.NoError(n.t, err)
	req.Header.Set("Authorization", "Bearer "+n.key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(n.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(n.t, err)
	return &apiResponse{status: resp.StatusCode, body: b}
}

func (n *node) mustCreate(path string, body any, status int) map[string]any {
	n.t.Helper()
	r := n.do("POST", path, body)
	require.Equal(n.t, status, r.status, "POST %s: %s", path, r.body)
	return r.obj(n.t)
}

// streamEvent is one decoded SSE frame.
type streamEvent struct {
	idLine string
	data   map[string]any
	raw    string
}

func (e streamEvent) typ() string { return e.data["type"].(string) }

// stream reads the session's SSE stream until it closes (terminal event)
// or ctx ends.
func (n *node) stream(ctx context.Context, sessionID string, lastEventID string) []streamEvent {
	n.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+sessionID+"/stream", nil)
	require.NoError(n.t, err)
	req.Header.Set("Authorization", "Bearer "+n.key)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(n.t, err)
	defer resp.Body.Close()
	require.Equal(n.t, 200, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	var out []streamEvent
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			return out
		}
		if f.Comment != "" {
			continue
		}
		d, err := sse.DecodeData(f)
		require.NoError(n.t, err)
		out = append(out, streamEvent{idLine: f.ID, data: d, raw: f.Data})
	}
}

// waitDone streams until the session's work ends and returns the events.
func (n *node) waitDone(sessionID string, timeout time.Duration) []streamEvent {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	evs := n.stream(ctx, sessionID, "")
	if ctx.Err() != nil {
		s, _ := n.app.DB().SessionGet(context.Background(), 0, sessionID)
		n.t.Logf("session %s: %+v\nnode log:\n%s", sessionID, s, n.logs.String())
	}
	require.NoError(n.t, ctx.Err(), "the stream did not reach a terminal event in time")
	require.NotEmpty(n.t, evs)
	return evs
}

// sandboxRead returns a file's bytes and octal mode from inside a sandbox.
func (n *node) sandboxRead(handle, path string) (string, string) {
	n.t.Helper()
	out, code := n.sandboxExec(handle, "cat "+path)
	require.Equal(n.t, 0, code, out)
	mode, code := n.sandboxExec(handle, "stat -c %a "+path)
	require.Equal(n.t, 0, code, mode)
	return out, strings.TrimSpace(mode)
}

func (n *node) sandboxExec(handle, script string) (string, int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ex, err := n.backend.Exec(ctx, handle, sprites.ExecRequest{Argv: []string{"bash", "-c", script}})
	require.NoError(n.t, err)
	defer ex.Close()
	var out []byte
	for {
		ev, err := ex.Next(ctx)
		require.NoError(n.t, err)
		if ev.Exited {
			return string(out), ev.ExitCode
		}
		out = append(out, ev.Data...)
	}
}

func (n *node) handle(sessionID string) string {
	n.t.Helper()
	s, err := n.app.DB().SessionGet(context.Background(), 0, sessionID)
	require.NoError(n.t, err)
	return s.BackendHandle
}

// outputText concatenates the output events of one stream.
func outputText(evs []streamEvent, stream string) string {
	var b strings.Builder
	for _, e := range evs {
		if e.typ() == "output" && e.data["stream"] == stream {
			b.WriteString(e.data["data"].(string))
		}
	}
	return b.String()
}

// stages lists "stage:state" in order.
func stages(evs []streamEvent) []string {
	var out []string
	for _, e := range evs {
		if e.typ() == "stage" {
			out = append(out, e.data["stage"].(string)+":"+e.data["state"].(string))
		}
	}
	return out
}

// deleteSandboxes removes every sandbox under dir (unmounting overlays) so
// the temp dir can be removed.
func deleteSandboxes(b sprites.Backend, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = b.Delete(ctx, e.Name())
			cancel()
		}
	}
}
