// Package spritestest provides a protocol-faithful fake of the Fly.io
// Sprites API over real sandboxed processes (package runner), for tests and
// for `aod dev fake-sprites`, and the backend conformance suite
// ([Conformance]) that every sprites.Backend must pass.
//
// The fake speaks the REST and exec-WebSocket protocol described in
// sprites.Client: bearer auth, sprite CRUD, fs read/write/list/chmod,
// network policy, exec with session_info, binary frames, attach with full
// scrollback replay and kill with an NDJSON answer. Its sandboxes and execs
// live in a data directory through a runner, so a new server on the same
// directory (even after the old one was killed with SIGKILL) sees the same
// sprites and can re-attach to running execs.
//
// Like Sprites it accepts every valid network policy and returns it; unlike
// the fake of D18 before issue 10, it also enforces it, with the runner: a
// deny-all policy leaves only lo, an allow-list gives the sandbox the
// runner's egress proxy (allowed names only; Options.RunnerConfig's
// EgressHosts points names at test servers), and no policy gives the
// runner's filtered private network.
//
// Where the official Go SDK (superfly/sprites-go) looks, the fake follows
// the service: an exec starts at once and its stdin frames reach the command
// as they arrive (session_info and output come before stdin EOF); env=
// replaces the command's whole environment; labels are kept on create and
// update (clear_labels empties them); list pages by name with max_results
// (1-100) and continuation_token; fs/list of a directory lists its
// children; a 429 carries Retry-After and X-RateLimit-Limit, -Remaining and
// -Reset (unix time).
//
// Not modelled, precisely:
//   - TTY mode has no pseudo-terminal: the command's stdin is a pipe and
//     its output pipes (isatty is false), stdout and stderr are merged into
//     raw binary messages, rows/cols and resize messages are ignored, and
//     there is no line discipline (no echo, ^C is a plain byte). Binary
//     client messages are raw input; the exit is the JSON exit message.
//   - With env=, bubblewrap still sets PWD to the working directory.
//   - An exec's stdin ends (EOF) when the client that started it leaves; a
//     re-attached client's messages are discarded (no stdin on attach).
//   - Signal messages ({"type":"signal"}) are ignored (no
//     X-Sprite-Capabilities header is sent); use the kill endpoint.
//   - The control channel (/control) answers 404, as the SDK expects of a
//     service without it; checkpoints, services, the TCP proxy, fs
//     delete/rename/copy and sprite hibernation (warm/cold) are absent.
//
// Faults are switched on with [Server.SetFaults] or, from another process,
// POST /_fake/faults with the JSON form of [Faults]; GET /_fake/requests
// returns the request log. Both need the bearer token.
package spritestest

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
)

// DefaultVersion is the Sprite-Version header the fake sends.
const DefaultVersion = "0.1.0-fake"

// Options configures a Server.
type Options struct {
	// Token is the bearer token clients must send. NewServer generates one
	// when empty; Start and ListenAndServe use $SPRITES_API_KEY, and fail
	// when that is empty too.
	Token string
	// Dir is the data directory (sprite metadata and the runner's
	// sandboxes). NewServer uses t.TempDir() when empty; Start requires it.
	Dir string
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
	// Runner runs the sandboxes. When nil a runner is made on Dir/sandboxes
	// with RunnerConfig (whose Dir, if empty, is set; whose Network defaults
	// to $AOD_LOCAL_NETWORK).
	Runner       *runner.Runner
	RunnerConfig runner.Config
	// Logger receives diagnostics; nil means slog.Default().
	Logger *slog.Logger
	// Organization is reported in sprite objects; default "fake-org".
	Organization string
	// Version is the Sprite-Version header; default DefaultVersion.
	Version string
	// OnStart, when set, is called by ListenAndServe once the server
	// listens.
	OnStart func(*Server)
	// KeepSandboxes stops NewServer's cleanup from deleting the sprites (for
	// tests that hand the directory to another server).
	KeepSandboxes bool
	// MaxLoggedRequests and MaxLoggedBodyBytes bound the request log (see
	// Requests); the oldest entries go first. Defaults 10,000 and 4 MiB.
	MaxLoggedRequests  int
	MaxLoggedBodyBytes int
}

// Server is a running fake Sprites server.
type Server struct {
	// Runner is the runner the sprites live in.
	Runner *runner.Runner

	opts    Options
	token   string
	url     string
	logger  *slog.Logger
	metaDir string
	ln      net.Listener
	hs      *http.Server

	// ctx ends when the server closes; exec handlers stop with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // Serve, exec streams and their timers

	closeMu sync.Mutex
	closed  bool

	mu       sync.Mutex
	faults   Faults
	requests []Request
	// reqBase is the sequence number of requests[0]; reqBytes the bytes of
	// the bodies kept.
	reqBase  int
	reqBytes int
	spriteMu sync.Mutex // serialises create/delete and metadata writes
}

// Request is one entry of the request log, recorded when the request
// arrives.
type Request struct {
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Query  string    `json:"query,omitempty"`
	// Body is kept for JSON requests up to 64 KiB, except file bodies
	// (/fs/ paths, which carry credentials such as auth.json): never kept.
	Body json.RawMessage `json:"body,omitempty"`
	// Status is the answer's status, 0 while the handler runs (101 for a
	// WebSocket).
	Status int `json:"status"`
}

// NewServer starts a fake server on loopback for the test and stops it (and,
// unless KeepSandboxes, deletes its sprites) in t.Cleanup. It fails the test
// when the host cannot run sandboxes.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Token == "" {
		opts.Token = "fake-" + randHex(12)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("spritestest: start fake server: %v", err)
	}
	t.Cleanup(func() {
		// Close first: it waits for in-flight requests, so no create can
		// land after DeleteAll.
		_ = s.Close()
		if !opts.KeepSandboxes {
			s.DeleteAll(context.Background())
		}
	})
	return s
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Start starts a fake server per opts (Dir required) and returns once it
// listens.
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("spritestest: Options.Dir is required")
	}
	token := cmp.Or(opts.Token, os.Getenv("SPRITES_API_KEY"))
	if token == "" {
		return nil, errors.New("spritestest: no token: pass --token or set SPRITES_API_KEY")
	}
	logger := cmp.Or(opts.Logger, slog.Default())
	r := opts.Runner
	if r == nil {
		cfg := opts.RunnerConfig
		cfg.Dir = cmp.Or(cfg.Dir, filepath.Join(opts.Dir, "sandboxes"))
		cfg.Network = cmp.Or(cfg.Network, os.Getenv("AOD_LOCAL_NETWORK"))
		cfg.Logger = cmp.Or(cfg.Logger, logger)
		var err error
		if r, err = runner.New(cfg); err != nil {
			return nil, fmt.Errorf("spritestest: %w", err)
		}
		if err := r.Check(); err != nil {
			return nil, fmt.Errorf("spritestest: this host cannot run sandboxes: %w", err)
		}
	}
	metaDir := filepath.Join(opts.Dir, "meta")
	if err := os.MkdirAll(metaDir, 0o700); err != nil {
		return nil, fmt.Errorf("spritestest: %w", err)
	}
	ln, err := net.Listen("tcp", cmp.Or(opts.Addr, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("spritestest: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		Runner: r, opts: opts, token: token, logger: logger, metaDir: metaDir,
		ln: ln, url: "http://" + ln.Addr().String(), ctx: ctx, cancel: cancel,
	}
	s.hs = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("spritestest: serve", "err", err)
		}
	}()
	return s, nil
}

// ListenAndServe runs a fake server on addr until ctx ends, for
// `aod dev fake-sprites --listen ADDR [--token T]`. token defaults to
// $SPRITES_API_KEY; opts.Dir defaults to $AOD_DATA_DIR/fake-sprites or a
// directory under the system temp dir.
func ListenAndServe(ctx context.Context, addr, token string, opts Options) error {
	opts.Addr = cmp.Or(addr, opts.Addr)
	opts.Token = cmp.Or(token, opts.Token)
	if opts.Dir == "" {
		if d := os.Getenv("AOD_DATA_DIR"); d != "" {
			opts.Dir = filepath.Join(d, "fake-sprites")
		} else {
			opts.Dir = filepath.Join(os.TempDir(), "aod-fake-sprites")
		}
	}
	s, err := Start(opts)
	if err != nil {
		return err
	}
	s.logger.Info("fake Sprites server listening", "url", s.URL(), "dir", opts.Dir)
	if opts.OnStart != nil {
		opts.OnStart(s)
	}
	<-ctx.Done()
	return s.Close()
}

// URL returns the base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.url }

// Token returns the bearer token.
func (s *Server) Token() string { return s.token }

// Client returns a sprites.Client for this server.
func (s *Server) Client(opts ...sprites.ClientOption) *sprites.Client {
	return sprites.NewClient(s.url, s.token, opts...)
}

// track registers a goroutine that Close waits for; false once closed.
func (s *Server) track() bool {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Close stops the server: listeners and exec streams end; commands keep
// running in their sandboxes.
func (s *Server) Close() error {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.hs.Shutdown(ctx)
	if err != nil {
		_ = s.hs.Close()
	}
	s.wg.Wait()
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return err
}

// DeleteAll deletes every sprite (killing its execs and unmounting its
// overlays); errors are logged.
func (s *Server) DeleteAll(ctx context.Context) {
	for _, m := range s.listMeta("") {
		if err := s.Runner.Delete(ctx, m.Name); err != nil && !errors.Is(err, runner.ErrNotFound) {
			s.logger.Warn("spritestest: delete sprite", "sprite", m.Name, "err", err)
		}
		_ = os.Remove(filepath.Join(s.metaDir, m.Name+".json"))
		_ = os.RemoveAll(filepath.Join(s.metaDir, m.Name+".execs"))
	}
}

// Requests returns a copy of the request log, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Policies returns the network policies POSTed for the sprite, in order
// (valid ones only).
func (s *Server) Policies(name string) []sprites.NetworkPolicy {
	var out []sprites.NetworkPolicy
	for _, r := range s.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v1/sprites/"+name+"/policy/network" && r.Status >= 200 && r.Status < 300 {
			var p sprites.NetworkPolicy
			if json.Unmarshal(r.Body, &p) == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_fake/faults", s.handleGetFaults)
	mux.HandleFunc("POST /_fake/faults", s.handleSetFaults)
	mux.HandleFunc("GET /_fake/requests", s.handleRequests)

	mux.HandleFunc("POST /v1/sprites", s.handleCreate)
	mux.HandleFunc("GET /v1/sprites", s.handleList)
	mux.HandleFunc("GET /v1/sprites/{name}", s.handleGet)
	mux.HandleFunc("PUT /v1/sprites/{name}", s.handleUpdate)
	mux.HandleFunc("DELETE /v1/sprites/{name}", s.handleDelete)

	mux.HandleFunc("GET /v1/sprites/{name}/exec", s.handleExecRoot) // HEAD too
	mux.HandleFunc("GET /v1/sprites/{name}/exec/{id}", s.handleAttach)
	mux.HandleFunc("POST /v1/sprites/{name}/exec/{id}/kill", s.handleKill)
	mux.HandleFunc("/v1/sprites/{name}/control", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "the control channel is not supported", nil)
	})

	mux.HandleFunc("PUT /v1/sprites/{name}/fs/write", s.handleFSWrite)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/read", s.handleFSRead)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/list", s.handleFSList)
	mux.HandleFunc("POST /v1/sprites/{name}/fs/chmod", s.handleFSChmod)

	mux.HandleFunc("GET /v1/sprites/{name}/policy/network", s.handleGetPolicy)
	mux.HandleFunc("POST /v1/sprites/{name}/policy/network", s.handleSetPolicy)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path, nil)
	})
	return s.middleware(mux)
}

// statusRecorder captures the status for the request log. It forwards
// Hijack (WebSocket upgrades) and Flush (NDJSON streams).
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hijack not supported")
	}
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Sprite-Version", cmp.Or(s.opts.Version, DefaultVersion))
		rec := &statusRecorder{ResponseWriter: w}
		var body []byte
		if r.Body != nil && r.ContentLength <= 64<<10 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			body, _ = io.ReadAll(io.LimitReader(r.Body, 64<<10))
			r.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		// Logged on arrival (a WebSocket handler runs for long); the
		// status is filled in when the handler returns.
		entry := Request{Time: time.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery}
		if json.Valid(body) && !strings.Contains(r.URL.Path, "/fs/") {
			entry.Body = body
		}
		seq := s.logRequest(entry)
		defer func() {
			s.mu.Lock()
			if i := seq - s.reqBase; i >= 0 {
				s.requests[i].Status = rec.status
			}
			s.mu.Unlock()
		}()
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.token)) != 1 {
			writeError(rec, http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token", nil)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/_fake/") && s.injectRESTFault(rec, r) {
			return
		}
		next.ServeHTTP(rec, r)
	})
}

// logRequest appends entry to the bounded request log and returns its
// sequence number.
func (s *Server) logRequest(entry Request) int {
	maxN := cmp.Or(s.opts.MaxLoggedRequests, 10_000)
	maxB := cmp.Or(s.opts.MaxLoggedBodyBytes, 4<<20)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, entry)
	s.reqBytes += len(entry.Body)
	drop := 0
	for len(s.requests)-drop > maxN || (s.reqBytes > maxB && drop < len(s.requests)-1) {
		s.reqBytes -= len(s.requests[drop].Body)
		drop++
	}
	if drop > 0 {
		s.requests = slices.Delete(s.requests, 0, drop)
		s.reqBase += drop
	}
	return s.reqBase + len(s.requests) - 1
}

// apiError writes the JSON error shape of the service.
func writeError(w http.ResponseWriter, status int, code, msg string, extra map[string]any) {
	body := map[string]any{"error": code, "message": msg}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, status, body)
}

// writeFSError writes the fs error shape {"error","code","path"}.
func writeFSError(w http.ResponseWriter, p string, err error) {
	status, code := http.StatusInternalServerError, "EIO"
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, runner.ErrNotFound):
		status, code = http.StatusNotFound, "ENOENT"
	case errors.Is(err, fs.ErrPermission):
		status, code = http.StatusForbidden, "EACCES"
	case errors.Is(err, fs.ErrInvalid):
		status, code = http.StatusBadRequest, "EINVAL"
	}
	writeJSON(w, status, map[string]any{"error": err.Error(), "code": code, "path": p})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- sprites ----

// spriteNameRE is the name rule: lowercase letters, digits and hyphens.
var spriteNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// spriteMeta is what the fake stores per sprite.
type spriteMeta struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	URLAuth   string    `json:"url_auth"`
	Labels    []string  `json:"labels,omitempty"`
}

func (s *Server) spriteObject(m spriteMeta) map[string]any {
	return map[string]any{
		"id":           m.ID,
		"name":         m.Name,
		"organization": cmp.Or(s.opts.Organization, "fake-org"),
		"status":       "warm",
		"url":          "https://" + m.Name + "-fake.sprites.app",
		"url_settings": map[string]any{"auth": cmp.Or(m.URLAuth, "sprite")},
		"labels":       labels(m.Labels),
		"created_at":   m.CreatedAt.UTC().Format(time.RFC3339),
		"updated_at":   m.UpdatedAt.UTC().Format(time.RFC3339),
	}
}

// labels renders a sprite's labels ([] when it has none).
func labels(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func (s *Server) readMeta(name string) (spriteMeta, bool) {
	if !spriteNameRE.MatchString(name) || !s.Runner.Exists(name) {
		return spriteMeta{}, false
	}
	b, err := os.ReadFile(filepath.Join(s.metaDir, name+".json"))
	var m spriteMeta
	if err != nil || json.Unmarshal(b, &m) != nil {
		// A sandbox made by someone else on the same runner dir.
		now := time.Now()
		return spriteMeta{ID: uuid.NewSHA1(uuid.NameSpaceURL, []byte(name)).String(), Name: name, CreatedAt: now, UpdatedAt: now}, true
	}
	return m, true
}

func (s *Server) writeMeta(m spriteMeta) error {
	b, _ := json.Marshal(m)
	tmp := filepath.Join(s.metaDir, "."+m.Name+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.metaDir, m.Name+".json"))
}

func (s *Server) listMeta(prefix string) []spriteMeta {
	ents, _ := os.ReadDir(s.metaDir)
	var out []spriteMeta
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") || !strings.HasPrefix(name, prefix) {
			continue
		}
		if m, ok := s.readMeta(name); ok {
			out = append(out, m)
		}
	}
	return out
}

// sprite resolves {name} or writes a 404.
func (s *Server) sprite(w http.ResponseWriter, r *http.Request) (spriteMeta, bool) {
	name := r.PathValue("name")
	m, ok := s.readMeta(name)
	if !ok {
		writeError(w, http.StatusNotFound, "sprite_not_found", fmt.Sprintf("sprite %q not found", name), nil)
	}
	return m, ok
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name        string `json:"name"`
		URLSettings struct {
			Auth string `json:"auth"`
		} `json:"url_settings"`
		Labels []string `json:"labels"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "bad JSON body: "+err.Error(), nil)
		return
	}
	if !spriteNameRE.MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, "invalid_name", fmt.Sprintf("invalid sprite name %q: use 1-63 lowercase letters, digits and hyphens", req.Name), nil)
		return
	}
	s.spriteMu.Lock()
	defer s.spriteMu.Unlock()
	if err := s.Runner.Create(r.Context(), req.Name); err != nil {
		if errors.Is(err, runner.ErrExists) {
			writeError(w, http.StatusBadRequest, "sprite_already_exists", fmt.Sprintf("sprite %q already exists", req.Name), nil)
			return
		}
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error(), nil)
		return
	}
	now := time.Now()
	m := spriteMeta{ID: uuid.NewString(), Name: req.Name, CreatedAt: now, UpdatedAt: now, URLAuth: req.URLSettings.Auth, Labels: req.Labels}
	if err := s.writeMeta(m); err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusCreated, s.spriteObject(m))
}

// maxListResults caps max_results (the Go SDK asks for 100).
const maxListResults = 100

// handleList pages through the sprites by name: max_results (default and
// cap 100) per page, continuation_token the last name of the previous page.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := maxListResults
	if v := q.Get("max_results"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListResults {
			writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("max_results must be 1-%d", maxListResults), nil)
			return
		}
		limit = n
	}
	metas := s.listMeta(q.Get("prefix"))
	slices.SortFunc(metas, func(a, b spriteMeta) int { return strings.Compare(a.Name, b.Name) })
	if after := q.Get("continuation_token"); after != "" {
		i, _ := slices.BinarySearchFunc(metas, after, func(m spriteMeta, t string) int { return strings.Compare(m.Name, t) })
		for i < len(metas) && metas[i].Name <= after {
			i++
		}
		metas = metas[i:]
	}
	more, next := len(metas) > limit, ""
	if more {
		metas = metas[:limit]
		next = metas[limit-1].Name
	}
	list := make([]map[string]any, 0, len(metas))
	for _, m := range metas {
		list = append(list, s.spriteObject(m))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sprites": list, "has_more": more, "next_continuation_token": next,
		"org": map[string]any{"name": cmp.Or(s.opts.Organization, "fake-org"), "running": 0, "warm": len(list), "cold": 0, "running_limit": 100, "warm_limit": 100},
	})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	if m, ok := s.sprite(w, r); ok {
		writeJSON(w, http.StatusOK, s.spriteObject(m))
	}
}

func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	var req struct {
		URLSettings *struct {
			Auth string `json:"auth"`
		} `json:"url_settings"`
		Labels      []string `json:"labels"`
		ClearLabels bool     `json:"clear_labels"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "bad JSON body: "+err.Error(), nil)
		return
	}
	if req.URLSettings != nil {
		m.URLAuth = req.URLSettings.Auth
	}
	switch {
	case req.ClearLabels:
		m.Labels = nil
	case req.Labels != nil:
		m.Labels = req.Labels
	}
	m.UpdatedAt = time.Now()
	s.spriteMu.Lock()
	err := s.writeMeta(m)
	s.spriteMu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, s.spriteObject(m))
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	s.spriteMu.Lock()
	defer s.spriteMu.Unlock()
	if err := s.Runner.Delete(r.Context(), m.Name); err != nil {
		if errors.Is(err, runner.ErrNotFound) {
			writeError(w, http.StatusNotFound, "sprite_not_found", fmt.Sprintf("sprite %q not found", m.Name), nil)
			return
		}
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error(), nil)
		return
	}
	_ = os.Remove(filepath.Join(s.metaDir, m.Name+".json"))
	_ = os.RemoveAll(filepath.Join(s.metaDir, m.Name+".execs"))
	w.WriteHeader(http.StatusNoContent)
}

// ---- filesystem ----

// fsPath resolves path against workingDir (default /).
func fsPath(p, wd string) (string, bool) {
	if p == "" {
		return "", false
	}
	if !path.IsAbs(p) {
		p = path.Join(cmp.Or(wd, "/"), p)
	}
	p = path.Clean(p)
	return p, path.IsAbs(p)
}

// fsTarget resolves an fs request's sprite and absolute path (answering the
// error itself when either is missing).
func (s *Server) fsTarget(w http.ResponseWriter, r *http.Request) (spriteMeta, string, url.Values, bool) {
	m, ok := s.sprite(w, r)
	if !ok {
		return m, "", nil, false
	}
	q := r.URL.Query()
	p, ok := fsPath(q.Get("path"), q.Get("workingDir"))
	if !ok {
		writeFSError(w, q.Get("path"), fmt.Errorf("path is required: %w", fs.ErrInvalid))
		return m, "", nil, false
	}
	return m, p, q, true
}

func parseMode(s string, def fs.FileMode) (fs.FileMode, bool) {
	if s == "" {
		return def, true
	}
	var m uint32
	if _, err := fmt.Sscanf(s, "%o", &m); err != nil || m > 0o7777 {
		return 0, false
	}
	return fs.FileMode(m), true
}

func (s *Server) handleFSWrite(w http.ResponseWriter, r *http.Request) {
	m, p, q, ok := s.fsTarget(w, r)
	if !ok {
		return
	}
	mode, ok := parseMode(q.Get("mode"), 0o644)
	if !ok {
		writeFSError(w, p, fmt.Errorf("bad mode %q: %w", q.Get("mode"), fs.ErrInvalid))
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		writeFSError(w, p, err)
		return
	}
	if q.Get("mkdir") != "true" && q.Get("mkdirParents") != "true" {
		if st, err := s.Runner.Stat(m.Name, path.Dir(p)); err != nil || !st.IsDir() {
			writeFSError(w, p, fmt.Errorf("parent directory %s does not exist: %w", path.Dir(p), fs.ErrNotExist))
			return
		}
	}
	if err := s.Runner.WriteFile(m.Name, p, data, mode); err != nil {
		writeFSError(w, p, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "size": len(data), "mode": fmt.Sprintf("%04o", uint32(mode.Perm()))})
}

func (s *Server) handleFSRead(w http.ResponseWriter, r *http.Request) {
	m, p, _, ok := s.fsTarget(w, r)
	if !ok {
		return
	}
	data, err := s.Runner.ReadFile(m.Name, p)
	if err != nil {
		writeFSError(w, p, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func statEntry(p string, fi fs.FileInfo) map[string]any {
	typ := "file"
	if fi.IsDir() {
		typ = "directory"
	}
	return map[string]any{
		"name": path.Base(p), "path": p, "type": typ, "size": fi.Size(),
		"mode":    fmt.Sprintf("%04o", uint32(fi.Mode().Perm())),
		"modTime": fi.ModTime().UTC().Format(time.RFC3339), "isDir": fi.IsDir(),
	}
}

// handleFSList lists a directory's entries (sorted by name), or gives a
// file's own entry (the SDK's Stat).
func (s *Server) handleFSList(w http.ResponseWriter, r *http.Request) {
	m, p, _, ok := s.fsTarget(w, r)
	if !ok {
		return
	}
	fi, err := s.Runner.Stat(m.Name, p)
	if err != nil {
		writeFSError(w, p, err)
		return
	}
	entries := []any{}
	if !fi.IsDir() {
		entries = append(entries, statEntry(p, fi))
	} else {
		children, err := s.Runner.ReadDir(m.Name, p)
		if err != nil {
			writeFSError(w, p, err)
			return
		}
		for _, c := range children {
			entries = append(entries, statEntry(path.Join(p, c.Name()), c))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "entries": entries, "count": len(entries)})
}

func (s *Server) handleFSChmod(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	var req struct {
		Path       string `json:"path"`
		WorkingDir string `json:"workingDir"`
		Mode       string `json:"mode"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeFSError(w, "", fmt.Errorf("bad JSON body: %v: %w", err, fs.ErrInvalid))
		return
	}
	p, ok := fsPath(req.Path, req.WorkingDir)
	mode, mok := parseMode(req.Mode, 0)
	if !ok || !mok || req.Mode == "" {
		writeFSError(w, req.Path, fmt.Errorf("path and an octal mode are required: %w", fs.ErrInvalid))
		return
	}
	if err := s.Runner.Chmod(m.Name, p, mode); err != nil {
		writeFSError(w, p, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "mode": fmt.Sprintf("%04o", uint32(mode.Perm()))})
}

// ---- network policy ----

var domainRE = regexp.MustCompile(`^(\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$`)

// validatePolicy applies the service's rules: each rule is a domain with
// action allow|deny, or an include of a preset.
func validatePolicy(p sprites.NetworkPolicy) error {
	for i, r := range p.Rules {
		switch {
		case r.Include != "":
			if r.Domain != "" || r.Action != "" {
				return fmt.Errorf("rule %d: include cannot be combined with domain or action", i)
			}
		case r.Domain == "":
			return fmt.Errorf("rule %d: domain or include is required", i)
		case !domainRE.MatchString(r.Domain):
			return fmt.Errorf("rule %d: invalid domain %q", i, r.Domain)
		case r.Action != "allow" && r.Action != "deny":
			return fmt.Errorf("rule %d: action must be allow or deny, not %q", i, r.Action)
		}
	}
	return nil
}

func (s *Server) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	p, err := s.Runner.Policy(m.Name)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error(), nil)
		return
	}
	if p.Rules == nil {
		p.Rules = []sprites.Rule{}
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleSetPolicy(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	var p sprites.NetworkPolicy
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_policy", "bad policy JSON: "+err.Error(), nil)
		return
	}
	if err := validatePolicy(p); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_policy", err.Error(), nil)
		return
	}
	if err := s.Runner.SetPolicy(m.Name, p); err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error(), nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
