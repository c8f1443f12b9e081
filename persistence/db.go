// Package persistence is aod's durable store: users and API keys, agents and
// environments with their version snapshots, sessions, turns and the
// append-only session event log whose ids are the SSE event ids.
//
// It runs on Postgres (bun over pgx's stdlib adapter on a pgxpool) or on an
// embedded SQLite file (modernc, pure Go) for single-node installs. Secret
// fields are sealed (package seal) before they reach the database.
package persistence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/migrate"
	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence/seal"
)

// Errors returned by store methods.
var (
	// ErrNotFound means the row does not exist or belongs to another user.
	ErrNotFound = errors.New("persistence: not found")
	// ErrConflict means a uniqueness or state rule refused the write.
	ErrConflict = errors.New("persistence: conflict")
)

// migrationLockKey is the Postgres advisory lock id held while migrating
// (D24), so several nodes can start at once.
const migrationLockKey int64 = 0x616f645f6d6967 // "aod_mig"

// DB is the store. It is safe for concurrent use.
type DB struct {
	bun     *bun.DB
	pool    *pgxpool.Pool // nil on SQLite
	dialect migrations.Dialect
	sealer  *seal.Sealer
}

// Options configure Open.
type Options struct {
	// URL is a postgres:// DSN; empty means the embedded SQLite file
	// SQLitePath.
	URL string
	// SQLitePath is the SQLite database file used when URL is empty.
	SQLitePath string
	// Sealer encrypts secret fields. Required.
	Sealer *seal.Sealer
	// MaxConns caps the Postgres pool (default pgxpool's).
	MaxConns int32
	// ConnectTimeout bounds each new Postgres connection (dial, TLS,
	// startup); default 5s, so a pool refilling against an unreachable
	// server fails instead of hanging.
	ConnectTimeout time.Duration
}

// Open connects to the database. It does not migrate; call Migrate.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Sealer == nil {
		return nil, errors.New("persistence: a Sealer is required")
	}
	if opts.URL == "" {
		return openSQLite(ctx, opts)
	}
	if !strings.HasPrefix(opts.URL, "postgres://") && !strings.HasPrefix(opts.URL, "postgresql://") {
		return nil, errors.New("persistence: DATABASE_URL must be a postgres:// URL")
	}
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("persistence: parse DATABASE_URL: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if cfg.ConnConfig.ConnectTimeout <= 0 || cfg.ConnConfig.ConnectTimeout > opts.ConnectTimeout {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	}
	// bun renders arguments into the SQL text, so every statement is unique:
	// pgx's default statement cache would only fill up with one-off
	// prepared statements. Execute them unprepared instead.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("persistence: connect: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("persistence: connect to postgres: %w", err)
	}
	sqldb := stdlib.OpenDBFromPool(pool)
	return &DB{
		bun:     bun.NewDB(sqldb, pgdialect.New()),
		pool:    pool,
		dialect: migrations.Postgres,
		sealer:  opts.Sealer,
	}, nil
}

func openSQLite(ctx context.Context, opts Options) (*DB, error) {
	if opts.SQLitePath == "" {
		return nil, errors.New("persistence: no DATABASE_URL and no SQLite path")
	}
	if err := os.MkdirAll(filepath.Dir(opts.SQLitePath), 0o700); err != nil {
		return nil, fmt.Errorf("persistence: create data dir: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_txlock", "immediate")
	dsn := "file:" + opts.SQLitePath + "?" + q.Encode()
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("persistence: open sqlite: %w", err)
	}
	// One connection: SQLite has one writer, and serialising here avoids
	// SQLITE_BUSY under concurrent requests.
	sqldb.SetMaxOpenConns(1)
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("persistence: open sqlite %s: %w", opts.SQLitePath, err)
	}
	// The file holds key hashes and sealed secrets: owner only.
	_ = os.Chmod(opts.SQLitePath, 0o600)
	return &DB{
		bun:     bun.NewDB(sqldb, sqlitedialect.New()),
		dialect: migrations.SQLite,
		sealer:  opts.Sealer,
	}, nil
}

// Dialect reports which database this is.
func (db *DB) Dialect() migrations.Dialect { return db.dialect }

// Bun exposes the underlying bun handle for tests and tooling.
func (db *DB) Bun() *bun.DB { return db.bun }

// Sealer returns the field sealer.
func (db *DB) Sealer() *seal.Sealer { return db.sealer }

// Close closes the database.
func (db *DB) Close() error {
	err := db.bun.Close()
	if db.pool != nil {
		db.pool.Close()
	}
	return err
}

// Ping checks the database answers a query (SELECT 1).
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.bun.NewRaw("SELECT 1").Scan(ctx, &one); err != nil {
		return fmt.Errorf("persistence: ping: %w", err)
	}
	return nil
}

// Migrate applies every pending migration. On Postgres it holds a session
// advisory lock for the duration (D24), so concurrent starts wait for the
// first one instead of racing; a crash releases the lock with the session.
func (db *DB) Migrate(ctx context.Context) ([]string, error) {
	if db.pool != nil {
		conn, err := db.pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("persistence: migrate: acquire lock conn: %w", err)
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
			return nil, fmt.Errorf("persistence: migrate: advisory lock: %w", err)
		}
		defer func() {
			// A fresh context: the unlock must happen even if ctx ended.
			uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrationLockKey)
		}()
	}
	m, err := db.migrator()
	if err != nil {
		return nil, err
	}
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("persistence: migrate: init: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: migrate: %w", err)
	}
	var applied []string
	for _, mig := range group.Migrations {
		applied = append(applied, mig.Name)
	}
	return applied, nil
}

// Rollback rolls back the last applied migration group (tests and tooling).
func (db *DB) Rollback(ctx context.Context) error {
	m, err := db.migrator()
	if err != nil {
		return err
	}
	if _, err := m.Rollback(ctx); err != nil {
		return fmt.Errorf("persistence: rollback: %w", err)
	}
	return nil
}

func (db *DB) migrator() (*migrate.Migrator, error) {
	fsys, err := migrations.FS(db.dialect)
	if err != nil {
		return nil, err
	}
	ms := migrate.NewMigrations()
	if err := ms.Discover(fsys.(fs.FS)); err != nil {
		return nil, fmt.Errorf("persistence: discover migrations: %w", err)
	}
	return migrate.NewMigrator(db.bun, ms, migrate.WithMarkAppliedOnSuccess(true)), nil
}

// now returns the current time as stored: UTC, microsecond precision.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Error classes of the database drivers, by code, never by message text
// (a message can quote user data and differs by driver version).
const (
	pgUniqueViolation = "23505"
)

// pgCode returns the SQLSTATE of a Postgres error ("" for anything else).
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// sqliteCode returns the extended result code of a SQLite error (0 for
// anything else).
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// isUniqueViolation reports a unique-constraint error on either dialect.
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return pgCode(err) == pgUniqueViolation
}

// IsPermanent reports an error that retrying cannot fix: Postgres classes
// 22 (data exception: bad input) and 23 (integrity constraint: a violated
// foreign key because the session was deleted, a duplicate key, a check),
// SQLite's constraint, too-big and type-mismatch results. Anything else (a
// lost connection, a timeout, a busy or full database) may pass on retry.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if c := sqliteCode(err); c != 0 {
		switch c & 0xff { // the primary result code
		case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH:
			return true
		}
		return false
	}
	c := pgCode(err)
	return strings.HasPrefix(c, "22") || strings.HasPrefix(c, "23")
}
