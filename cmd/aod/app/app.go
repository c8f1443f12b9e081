package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/cluster"
	aodhttp "github.com/aodhq/aod/http"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/seal"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/janitor"
	"github.com/aodhq/aod/sprites/local"
	"github.com/aodhq/aod/sprites/runner"
)

// App is one aod node.
type App struct {
	cfg      *Config
	log      *slog.Logger
	out      io.Writer
	db       *persistence.DB
	backend  sprites.Backend
	sessions *actors.Manager
	janitor  *janitor.Janitor
	server   *aodhttp.Server
	ln       net.Listener
	served   chan error

	// reconciler resumes unfinished sessions that have no actor.
	reconciler *actors.Reconciler
}

// Options tune New beyond the configuration.
type Options struct {
	// Out receives the one-time bootstrap key (standard output in
	// production, D15). Nil discards it.
	Out io.Writer
	// Listener, when set, is used instead of listening on cfg.Listen.
	Listener net.Listener
	// Backend, when set, replaces the configured sandbox backend (tests).
	Backend sprites.Backend
	// NodeName names this node (default: the host name).
	NodeName string
	// Actors tunes the session actors (zero values take defaults).
	Actors actors.Config
	// Version is reported by aod_build_info.
	Version string
	// WrapStore, when set, wraps the store the session actors use (tests
	// inject faults through it).
	WrapStore func(actors.Store) actors.Store
}

// OpenSealer builds the field sealer per D14: FIELD_ENCRYPTION_KEY, else
// DJANGO_SECRET_KEY, else a key generated once into DataDir/encryption.key.
func OpenSealer(cfg *Config, log *slog.Logger) (*seal.Sealer, error) {
	material := cfg.EncryptionKey
	if material == "" {
		m, created, err := seal.LoadOrCreateKeyFile(cfg.KeyFilePath())
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("generated a new field encryption key; back it up or set FIELD_ENCRYPTION_KEY",
				slog.String("path", cfg.KeyFilePath()))
		}
		material = m
	}
	return seal.New(material, cfg.EncryptionKeysOld...)
}

// OpenDB opens (without migrating) the configured database.
func OpenDB(ctx context.Context, cfg *Config, log *slog.Logger) (*persistence.DB, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	sealer, err := OpenSealer(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	db, err := persistence.Open(ctx, persistence.Options{URL: cfg.DatabaseURL, SQLitePath: cfg.SQLitePath(), Sealer: sealer,
		ConnectTimeout: cfg.DBTimeout})
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return db, nil
}

// New wires a node in dependency order: data dir and encryption key →
// database → migrations → bootstrap user → HTTP server. Start serves it.
func New(ctx context.Context, cfg *Config, log *slog.Logger, opts Options) (*App, error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	db, err := OpenDB(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: log, out: out, db: db, ln: opts.Listener}
	if a.ln == nil {
		// Bind early so the bootstrap curl line shows the real address
		// (AOD_LISTEN may use port 0).
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		a.ln = ln
	}
	applied, err := db.Migrate(ctx)
	if err != nil {
		a.closeEarly()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	if len(applied) > 0 {
		log.Info("applied migrations", slog.Any("migrations", applied))
	}
	if err := a.bootstrap(ctx); err != nil {
		a.closeEarly()
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	a.backend = opts.Backend
	if a.backend == nil {
		a.backend, err = NewBackend(cfg, log)
		if err != nil {
			a.closeEarly()
			return nil, fmt.Errorf("sandbox backend: %w", err)
		}
	}
	if err := a.backend.Check(ctx); err != nil {
		// Serve anyway: the API works, sessions answer 503 (D1).
		log.Warn("sandbox backend unusable; sessions cannot start", slog.String("sandbox", cfg.Sandbox), slog.String("reason", err.Error()))
	}
	node := cmp.Or(opts.NodeName, hostname())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "aod", Name: "build_info", Help: "Build and node information (always 1).",
	}, []string{"version", "database", "sandbox"}).WithLabelValues(cmp.Or(opts.Version, "dev"), string(db.Dialect()), cfg.Sandbox).Set(1)
	actorCfg := opts.Actors
	if actorCfg.SubscriberBufferBytes == 0 {
		actorCfg.SubscriberBufferBytes = int64(cfg.SSESubscriberBuffer)
	}
	actorCfg.MaxTurnOutput = cmp.Or(actorCfg.MaxTurnOutput, cfg.MaxTurnOutput)
	actorCfg.MaxSessionOutput = cmp.Or(actorCfg.MaxSessionOutput, cfg.MaxSessionOutput)
	var store actors.Store = db
	if opts.WrapStore != nil {
		store = opts.WrapStore(store)
	}
	a.janitor = janitor.New(db, a.backend, janitor.Config{Backend: cfg.Sandbox}, log, reg)
	a.sessions, err = actors.NewManager(actors.Deps{
		DB: store, Backend: a.backend, Owner: cluster.Single{Name: node}, Logger: log, Config: actorCfg, Registerer: reg,
		Destroys: a.janitor,
	})
	if err != nil {
		a.closeEarly()
		return nil, err
	}
	a.reconciler = actors.NewReconciler(a.sessions, cfg.ReconcileInterval)
	a.server = aodhttp.New(aodhttp.Deps{
		DB:     db,
		Logger: log,
		Config: aodhttp.Config{
			MaxBodyBytes:        cfg.MaxBodyBytes,
			BackendName:         cfg.Sandbox,
			SpriteNamePrefix:    cfg.SpriteNamePrefix,
			DefaultTimeout:      cfg.DefaultTimeout,
			DefaultMaxSessions:  cfg.DefaultMaxConcurrentSessions,
			SSEHeartbeat:        cfg.SSEHeartbeat,
			SSEStale:            cfg.SSEStale,
			SSEWriteTimeout:     cfg.SSEWriteTimeout,
			SSESubscribeTimeout: cfg.SSESubscribeTimeout,
			DevPublish:          cfg.DevPublish,
			DBTimeout:           cfg.DBTimeout,
		},
		Checks:   []aodhttp.Checker{{Name: "sandbox", Check: a.backend.Check}},
		Sessions: aodhttp.ActorSessions(a.sessions),
		Backend:  a.backend,
		Registry: reg,
	})
	return a, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "aod"
	}
	return h
}

// NewBackend builds the configured sandbox backend (D1).
func NewBackend(cfg *Config, log *slog.Logger) (sprites.Backend, error) {
	if cfg.Sandbox == "sprites" {
		return sprites.NewClient(cfg.SpritesBaseURL, cfg.SpritesAPIKey, sprites.WithLogger(log)), nil
	}
	return local.New(local.Config{
		Dir: cfg.SandboxDir(), Network: cfg.LocalNetwork, ExtraBinds: cfg.RunnerBinds(), Limits: cfg.LocalLimits, Logger: log,
		UIDBase: cfg.LocalUIDBase, UIDCount: cfg.LocalUIDCount,
	})
}

// bootstrap creates user "admin" and prints its first API key when the
// database has no user yet (D15: printed to Out, never logged).
func (a *App) bootstrap(ctx context.Context) error {
	n, err := a.db.UserCount(ctx)
	if err != nil || n > 0 {
		return err
	}
	u, err := a.db.UserCreate(ctx, "admin")
	if errors.Is(err, persistence.ErrConflict) {
		return nil // another node bootstrapped concurrently
	}
	if err != nil {
		return err
	}
	raw, _, err := a.db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, Name: "Bootstrap key"})
	if err != nil {
		return err
	}
	base := "http://" + curlHost(a.ln.Addr().String())
	fmt.Fprintf(a.out, "\nCreated user \"admin\" with its first API key (shown once, keep it safe):\n\n    %s\n\nTry it:\n\n    curl -H \"Authorization: Bearer %s\" %s/agents\n\n", raw, raw, base)
	return nil
}

func curlHost(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "localhost:8777"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func (a *App) closeEarly() {
	_ = a.ln.Close()
	_ = a.db.Close()
}

// Sessions returns the node's session actor manager.
func (a *App) Sessions() *actors.Manager { return a.sessions }

// Reconciler returns the node's session reconciler.
func (a *App) Reconciler() *actors.Reconciler { return a.reconciler }

// DB returns the node's database.
func (a *App) DB() *persistence.DB { return a.db }

// Janitor returns the node's sandbox janitor.
func (a *App) Janitor() *janitor.Janitor { return a.janitor }

// Start begins serving HTTP. It returns once the listener is bound.
func (a *App) Start(ctx context.Context) error {
	// Pick up sessions left pending or running by a previous process
	// (D20) before taking requests.
	if n, err := a.sessions.Recover(ctx); err != nil {
		return fmt.Errorf("recover sessions: %w", err)
	} else if n > 0 {
		a.log.Info("recovering sessions", slog.Int("sessions", n))
	}
	if err := a.reconciler.Start(ctx); err != nil {
		return fmt.Errorf("start session reconciler: %w", err)
	}
	// Sandboxes of sessions terminated or deleted before a crash are
	// destroyed now (and retried until the backend confirms).
	if err := a.janitor.Start(ctx); err != nil {
		return fmt.Errorf("start sandbox janitor: %w", err)
	}
	a.served = make(chan error, 1)
	go func() { a.served <- a.server.Serve(a.ln) }()
	a.log.Info("aod serving", slog.String("addr", a.ln.Addr().String()),
		slog.String("database", string(a.db.Dialect())), slog.String("sandbox", a.cfg.Sandbox))
	return nil
}

// HTTPAddr is the bound HTTP address.
func (a *App) HTTPAddr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Done reports the server's exit.
func (a *App) Done() <-chan error { return a.served }

// Stop shuts down in reverse order: HTTP (closing streams), the
// reconciler, then the session actors (running execs keep running in their sandboxes and are
// re-attached by the next start), then the database.
func (a *App) Stop(ctx context.Context) error {
	var errs []error
	if a.server != nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := a.server.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		cancel()
	}
	if a.reconciler != nil {
		a.reconciler.Stop()
	}
	if a.sessions != nil {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if err := a.sessions.Stop(sctx); err != nil {
			errs = append(errs, fmt.Errorf("stop session actors: %w", err))
		}
		cancel()
	}
	if a.janitor != nil {
		a.janitor.Stop()
	}
	if err := a.db.Close(); err != nil && !strings.Contains(err.Error(), "closed") {
		errs = append(errs, fmt.Errorf("close database: %w", err))
	}
	return errors.Join(errs...)
}

// RunnerBinds converts AOD_LOCAL_BINDS for the sandbox runner.
func (c *Config) RunnerBinds() []runner.Bind {
	var out []runner.Bind
	for _, b := range c.LocalBinds {
		out = append(out, runner.Bind{Src: b.Src, Dst: b.Dst, ReadOnly: true})
	}
	return out
}
