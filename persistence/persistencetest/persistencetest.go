// Package persistencetest gives tests real databases (D17).
//
// Postgres: each test package gets its own fresh database, cloned with
// CREATE DATABASE … TEMPLATE from a template migrated once per migration
// set, on the server at TEST_DATABASE_URL (default the local service at
// 127.0.0.1:5432, user postgres). Packages therefore run in parallel; tests
// inside a package isolate themselves by creating their own users.
// Under CI=true a missing Postgres fails the test; locally it skips.
//
// SQLite: a fresh file per call in the test's temp dir.
package persistencetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/seal"
)

// DefaultURL is the Postgres server used when TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// TestKey is the encryption key material used by test databases.
const TestKey = "aod-test-encryption-key"

// Sealer returns the sealer test databases use.
func Sealer(tb testing.TB) *seal.Sealer {
	s, err := seal.New(TestKey)
	require.NoError(tb, err)
	return s
}

var (
	pkgOnce sync.Once
	pkgURL  string
	pkgErr  error
	created []string
	counter atomic.Int64
)

// ServerURL returns the maintenance URL of the test Postgres server.
func ServerURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// PostgresURL returns the URL of this package's fresh database, creating it
// on first use.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	pkgOnce.Do(func() { pkgURL, pkgErr = createPackageDB(callerPackage()) })
	if pkgErr != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("postgres is required under CI: %v", pkgErr)
		}
		tb.Skipf("postgres unavailable (set TEST_DATABASE_URL): %v", pkgErr)
	}
	return pkgURL
}

// FreshPostgresURL returns the URL of a new database of its own, cloned from
// the migrated template and dropped when the test ends. Use it where one
// package database is not enough isolation: a test node recovers every
// unfinished session in its database, so nodes must not share one.
func FreshPostgresURL(tb testing.TB) string {
	tb.Helper()
	PostgresURL(tb) // makes sure the template exists (or skips/fails)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, ServerURL())
	require.NoError(tb, err)
	defer conn.Close(ctx)
	hash, err := migrationsHash()
	require.NoError(tb, err)
	name := fmt.Sprintf("aod_n_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, counter.Add(1))
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		_, lastErr = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{"aod_tmpl_" + hash}.Sanitize())
		if lastErr == nil || !strings.Contains(lastErr.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(tb, lastErr, "create test database")
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if c, err := pgx.Connect(ctx, ServerURL()); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
	})
	u, err := withDB(ServerURL(), name)
	require.NoError(tb, err)
	return u
}

// Postgres opens this package's Postgres database.
func Postgres(tb testing.TB) *persistence.DB {
	tb.Helper()
	u := PostgresURL(tb)
	db, err := persistence.Open(context.Background(), persistence.Options{URL: u, Sealer: Sealer(tb), MaxConns: 16})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// SQLite opens a fresh, migrated SQLite database in a temp dir.
func SQLite(tb testing.TB) *persistence.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "aod.db")
	db, err := persistence.Open(context.Background(), persistence.Options{SQLitePath: path, Sealer: Sealer(tb)})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = db.Close() })
	_, err = db.Migrate(context.Background())
	require.NoError(tb, err)
	return db
}

// Each runs fn as a subtest against Postgres and against SQLite.
func Each(t *testing.T, fn func(t *testing.T, db *persistence.DB)) {
	t.Helper()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, Open(t, d))
		})
	}
}

// Open opens a test database of the given dialect.
func Open(tb testing.TB, d migrations.Dialect) *persistence.DB {
	tb.Helper()
	if d == migrations.Postgres {
		return Postgres(tb)
	}
	return SQLite(tb)
}

// OpenFresh is Open with a Postgres database of the test's own (see
// FreshPostgresURL), for tests that read every session in the database,
// as the reconciler does.
func OpenFresh(tb testing.TB, d migrations.Dialect) *persistence.DB {
	tb.Helper()
	if d != migrations.Postgres {
		return SQLite(tb)
	}
	db, err := persistence.Open(context.Background(), persistence.Options{URL: FreshPostgresURL(tb), Sealer: Sealer(tb), MaxConns: 16})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// WrapTestMain runs the package's tests and then drops the databases this
// package created. Call it from TestMain: os.Exit(persistencetest.WrapTestMain(m)).
func WrapTestMain(m *testing.M) int {
	code := m.Run()
	dropCreated()
	return code
}

func dropCreated() {
	if len(created) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	for _, name := range created {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
}

// callerPackage names the test package for the database name.
func callerPackage() string {
	for i := 2; i < 15; i++ {
		pc, _, _, ok := runtime.Caller(i)
		if !ok {
			break
		}
		fn := runtime.FuncForPC(pc).Name()
		if strings.Contains(fn, "persistencetest.") {
			continue
		}
		// github.com/aodhq/aod/http.TestX → http
		if i := strings.LastIndex(fn, "/"); i >= 0 {
			fn = fn[i+1:]
		}
		if i := strings.Index(fn, "."); i >= 0 {
			fn = fn[:i]
		}
		return sanitize(fn)
	}
	return "pkg"
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// migrationsHash identifies the migration set, so a changed schema gets a
// new template.
func migrationsHash() (string, error) {
	fsys, err := migrations.FS(migrations.Postgres)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	err = fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%s\x00", path, b)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

func createPackageDB(pkg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server := ServerURL()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", redact(server), err)
	}
	defer conn.Close(ctx)
	hash, err := migrationsHash()
	if err != nil {
		return "", err
	}
	tmpl := "aod_tmpl_" + hash
	if err := ensureTemplate(ctx, conn, server, tmpl); err != nil {
		return "", err
	}
	name := fmt.Sprintf("aod_t_%s_%d_%d_%d", pkg, os.Getpid(), time.Now().UnixNano()%1e6, counter.Add(1))
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		_, lastErr = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{tmpl}.Sanitize())
		if lastErr == nil {
			created = append(created, name)
			return withDB(server, name)
		}
		// Another package is cloning the same template right now.
		if !strings.Contains(lastErr.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("create test database: %w", lastErr)
}

// ensureTemplate creates and migrates the template database once, under an
// advisory lock so concurrent test packages wait for each other.
func ensureTemplate(ctx context.Context, conn *pgx.Conn, server, tmpl string) error {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7340001)"); err != nil {
		return fmt.Errorf("template lock: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(7340001)") //nolint:errcheck
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", tmpl).Scan(&exists); err != nil {
		return fmt.Errorf("look up template: %w", err)
	}
	if exists {
		return nil
	}
	building := tmpl + "_build"
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	u, err := withDB(server, building)
	if err != nil {
		return err
	}
	s, _ := seal.New(TestKey)
	db, err := persistence.Open(ctx, persistence.Options{URL: u, Sealer: s})
	if err != nil {
		return err
	}
	_, err = db.Migrate(ctx)
	_ = db.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{tmpl}.Sanitize()); err != nil {
		return fmt.Errorf("rename template: %w", err)
	}
	return nil
}

func withDB(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("parse TEST_DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid url>"
	}
	return u.Redacted()
}
