package http

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/cors"
	"github.com/gofiber/fiber/v2/middleware/requestid"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/sprites"
)

// Checker is one named /health check; nil error means ok.
type Checker struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config holds the HTTP layer's settings.
type Config struct {
	// MaxBodyBytes caps request bodies (D13); larger bodies get 413.
	MaxBodyBytes int
	// BackendName is stored on sessions ("sprites" or "local").
	BackendName string
	// SpriteNamePrefix prefixes sandbox names ("aod").
	SpriteNamePrefix string
	// DefaultTimeout is the per-turn timeout when a request gives none.
	DefaultTimeout time.Duration
	// DefaultMaxSessions is the concurrent-session limit without a
	// per-user override.
	DefaultMaxSessions int
	// SSEHeartbeat and SSEStale are the stream's heartbeat interval and idle
	// limit (D10).
	SSEHeartbeat time.Duration
	SSEStale     time.Duration
	// SSEPoll is how often a stream without a live actor re-reads the log.
	SSEPoll time.Duration
	// SSEWriteTimeout bounds every write of a stream: a client that does
	// not take the bytes in time is disconnected. Default 30s.
	SSEWriteTimeout time.Duration
	// SSESubscribeTimeout bounds the wait for the session actor's answer
	// before a stream's 200; past it the stream is served from the log.
	// Default 5s.
	SSESubscribeTimeout time.Duration
	// DevPublish enables POST /dev/sessions/{id}/output (D19).
	DevPublish bool
	// DBTimeout bounds the database work of one request (AOD_DB_TIMEOUT);
	// past it the request answers 503. Default 5s.
	DBTimeout time.Duration
}

// Deps are what the HTTP layer needs from the rest of the node.
type Deps struct {
	DB     *persistence.DB
	Logger *slog.Logger
	Config Config
	// Checks run by GET /health besides db and crypto (e.g. "sandbox").
	Checks []Checker
	// Sessions runs session actors; Backend is the sandbox backend. Either
	// may be nil: session creation then answers 503.
	Sessions Sessions
	Backend  sprites.Backend
	// Registry receives the HTTP metrics and is served at GET /metrics;
	// nil means a private registry.
	Registry *prometheus.Registry
}

// Server is the API server.
type Server struct {
	app     *fiber.App
	metrics *metrics
	db      *persistence.DB
	log     *slog.Logger
	cfg     Config
	deps    Deps
	done    chan struct{}
	// ctx bounds work that outlives a handler (streams); Shutdown cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// streams counts the stream goroutines on hijacked connections (which
	// the Fiber server no longer tracks); streamConns lets Shutdown cut
	// their pending writes.
	streams     sync.WaitGroup
	streamMu    sync.Mutex
	streamConns map[net.Conn]struct{}
	// keptConns are connections handed back for keep-alive after a stream
	// (stream.go keepAlive): fasthttp counts them open but does not track
	// them as idle until their first request, so Shutdown closes those that
	// are still waiting for one.
	keptConns map[*keptConn]struct{}
}

// handlerFunc is an authenticated handler.
type handlerFunc func(c *fiber.Ctx, p *principal) error

// New builds the server and its routes.
func New(deps Deps) *Server {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	c := &deps.Config
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.BackendName == "" {
		c.BackendName = "sprites"
	}
	if c.SpriteNamePrefix == "" {
		c.SpriteNamePrefix = "aod"
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 600 * time.Second
	}
	if c.SSEHeartbeat <= 0 {
		c.SSEHeartbeat = 15 * time.Second
	}
	if c.SSEStale <= 0 {
		c.SSEStale = 600 * time.Second
	}
	if c.SSEPoll <= 0 {
		c.SSEPoll = 500 * time.Millisecond
	}
	if c.DBTimeout <= 0 {
		c.DBTimeout = 5 * time.Second
	}
	if c.SSEWriteTimeout <= 0 {
		c.SSEWriteTimeout = 30 * time.Second
	}
	if c.SSESubscribeTimeout <= 0 {
		c.SSESubscribeTimeout = 5 * time.Second
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	s := &Server{db: deps.DB, log: deps.Logger, cfg: deps.Config, deps: deps, done: make(chan struct{}),
		metrics: newMetrics(deps.Registry), streamConns: map[net.Conn]struct{}{}, keptConns: map[*keptConn]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.app = fiber.New(fiber.Config{
		AppName:               "aod",
		StrictRouting:         true,
		CaseSensitive:         true,
		BodyLimit:             deps.Config.MaxBodyBytes,
		DisableStartupMessage: true,
		ReadTimeout:           60 * time.Second,
		IdleTimeout:           120 * time.Second,
		// WriteTimeout stays 0: it would cut SSE streams (go-deps §3).
		ErrorHandler: s.errorHandler,
	})
	// Streams write on hijacked connections and hand them back for
	// keep-alive (stream.go); the server must not close them itself.
	s.app.Server().KeepHijackedConns = true
	s.app.Use(requestid.New(requestid.Config{Generator: utils.UUIDv4}))
	s.app.Use(s.recoverPanics)
	s.app.Use(s.accessLog)
	s.app.Use(s.dbDeadline)
	s.app.Use(cors.New(cors.Config{AllowOrigins: "*", AllowHeaders: "Authorization, Content-Type, Last-Event-ID"}))
	s.routes()
	s.app.Use(func(c *fiber.Ctx) error { return errNotFound })
	return s
}

// App exposes the Fiber app (tests use App().Test).
func (s *Server) App() *fiber.App { return s.app }

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.app.Listener(ln) }

// Shutdown ends open streams (cutting writes still pending), waits for
// them, then stops the server gracefully within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.streamMu.Lock()
	select {
	case <-s.done:
	default:
		close(s.done)
		s.cancel()
	}
	s.streamMu.Unlock()
	s.cutStreams()
	ended := make(chan struct{})
	go func() { s.streams.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.closeKeptIdle()
	return s.app.ShutdownWithContext(ctx)
}

func requestID(c *fiber.Ctx) string {
	if v, ok := c.Locals("requestid").(string); ok {
		return v
	}
	return ""
}

// recoverPanics turns a panic into a 500 JSON answer and a log line with the
// stack; the client learns nothing of the internals.
func (s *Server) recoverPanics(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in handler",
				slog.String("request_id", requestID(c)),
				slog.String("method", c.Method()),
				slog.String("route", c.Route().Path),
				slog.String("panic", fmt.Sprint(r)),
				slog.String("stack", string(debug.Stack())))
			err = errInternal
		}
	}()
	return c.Next()
}

// accessLog logs one line per request: never bodies, never headers.
func (s *Server) accessLog(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := c.Response().StatusCode()
	if err != nil {
		if herr := s.app.Config().ErrorHandler(c, err); herr != nil {
			_ = c.SendStatus(fiber.StatusInternalServerError)
		}
		status = c.Response().StatusCode()
		err = nil
	}
	s.metrics.observe(c, start, status)
	s.log.LogAttrs(c.UserContext(), slog.LevelInfo, "http",
		slog.String("request_id", requestID(c)),
		slog.String("method", c.Method()),
		slog.String("route", c.Route().Path),
		slog.Int("status", status),
		slog.Duration("latency", time.Since(start)))
	return err
}

// baseCtxKey holds a request's context before dbDeadline bounded it.
type baseCtxKey struct{}

// dbDeadline bounds a request's database work: handlers pass
// c.UserContext() to every store call, so a database that does not answer
// (a cut network, a full disk) fails the request after DBTimeout with 503
// instead of holding it. Streams are not cut by it: after the 200 they run
// on the server's context.
func (s *Server) dbDeadline(c *fiber.Ctx) error {
	base := c.UserContext()
	c.Locals(baseCtxKey{}, base)
	ctx, cancel := context.WithTimeout(base, s.cfg.DBTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	return c.Next()
}

// rearmDBDeadline gives the rest of a handler a fresh database deadline
// after slow work that is not the database's (a sandbox backend call).
// The caller must call the returned cancel.
func (s *Server) rearmDBDeadline(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	base, ok := c.Locals(baseCtxKey{}).(context.Context)
	if !ok {
		base = context.Background()
	}
	ctx, cancel := context.WithTimeout(base, s.cfg.DBTimeout)
	c.SetUserContext(ctx)
	return ctx, cancel
}

// backendTimeout bounds a sandbox backend call made by a handler (its
// REST retries included).
const backendTimeout = 2 * time.Minute

// backendContext is the context of a handler's sandbox backend call: the
// request's, without the database deadline, bounded by backendTimeout.
func (s *Server) backendContext(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	base, ok := c.Locals(baseCtxKey{}).(context.Context)
	if !ok {
		base = context.Background()
	}
	return context.WithTimeout(base, backendTimeout)
}

// view registers one path. methods maps HTTP methods to handlers.
//
// authFirst=true mirrors AoD's method-dispatching views: authenticate, then
// answer an unsupported method with 405 JSON. authFirst=false mirrors its
// decorated GET-only/POST-only views: an unsupported method gets Django's
// bare 405 before authentication. Path parameters named in uuidParams must
// be canonical UUIDs, else 404 before anything else.
func (s *Server) view(path string, authFirst bool, methods map[string]handlerFunc) {
	var allow []string
	for m := range methods {
		allow = append(allow, m)
	}
	sort.Strings(allow)
	allowHeader := strings.Join(allow, ", ")
	params := pathParams(path)
	s.app.All(path, func(c *fiber.Ctx) error {
		for _, name := range params {
			if !persistence.ValidUUID(c.Params(name)) {
				return errNotFound
			}
		}
		h, ok := methods[c.Method()]
		if !ok && !authFirst {
			return &bareMethodNotAllowed{allow: allowHeader}
		}
		p, err := s.authenticate(c)
		if err != nil {
			return err
		}
		if !ok {
			return errMethodNotAllowed
		}
		return h(c, p)
	})
}

func pathParams(path string) []string {
	var out []string
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, ":") {
			out = append(out, seg[1:])
		}
	}
	return out
}

// body parses the request body as a JSON object (400 Invalid JSON otherwise).
func body(c *fiber.Ctx) (map[string]any, error) {
	return decodeObject(c.Body())
}

func (s *Server) routes() {
	s.app.All("/health", s.health)
	s.app.Get("/metrics", metricsHandler(s.deps.Registry))
	s.agentRoutes()
	s.environmentRoutes()
	s.sessionRoutes()
}
