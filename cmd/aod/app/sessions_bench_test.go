package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
	"github.com/aodhq/aod/sprites/spritestest"
)

// Benchmarks of session creation through the real HTTP API on one node
// (docs/bench/sessions.md):
//
//	BenchmarkSessionCreate     POST /sessions throughput (202s per second) with
//	                           an in-memory sandbox backend, so the figure is
//	                           the API + database + actor cost of a session.
//	BenchmarkSessionLifecycle  create → provisioned → turn completed through
//	                           the fake Sprites server (real bubblewrap
//	                           sandboxes) and the stand-in agent CLIs.
//
// AOD_BENCH_CONCURRENCY overrides the number of concurrent clients.

// logCounter is a slog handler that counts warnings and errors and keeps
// the first few, as evidence of trouble under load.
type logCounter struct {
	warns, errors atomic.Int64
	mu            sync.Mutex
	first         []string
}

func (l *logCounter) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		l.errors.Add(1)
	} else {
		l.warns.Add(1)
	}
	l.mu.Lock()
	if len(l.first) < 5 {
		line := r.Level.String() + " " + r.Message
		r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
		l.first = append(l.first, line)
	}
	l.mu.Unlock()
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

func (l *logCounter) report(tb testing.TB) {
	if n := l.warns.Load() + l.errors.Load(); n > 0 {
		l.mu.Lock()
		defer l.mu.Unlock()
		tb.Logf("node logged %d warnings and %d errors; first: %q", l.warns.Load(), l.errors.Load(), l.first)
	}
}

// benchNode is a node for benchmarks (startNode needs a *testing.T).
type benchNode struct {
	app    *App
	base   string
	keys   []string // one per user
	logs   *logCounter
	client *http.Client
}

func startBenchNode(tb testing.TB, dialect migrations.Dialect, backend sprites.Backend, users int, env map[string]string) *benchNode {
	tb.Helper()
	e := map[string]string{
		"AOD_LISTEN":                      "127.0.0.1:0",
		"AOD_DATA_DIR":                    tb.TempDir(),
		"FIELD_ENCRYPTION_KEY":            persistencetest.TestKey,
		"DEFAULT_MAX_CONCURRENT_SESSIONS": "1000000",
	}
	if dialect == migrations.Postgres {
		e["DATABASE_URL"] = benchPostgresURL(tb)
	}
	for k, v := range env {
		e[k] = v
	}
	cfg, err := LoadConfig(func(k string) string { return e[k] })
	if err != nil {
		tb.Fatal(err)
	}
	logs := &logCounter{}
	ctx := context.Background()
	a, err := New(ctx, cfg, slog.New(logs), Options{Backend: backend, NodeName: "bench"})
	if err != nil {
		tb.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = a.Stop(sctx)
	})
	n := &benchNode{app: a, base: "http://" + a.HTTPAddr(), logs: logs,
		client: &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}}
	tb.Cleanup(n.client.CloseIdleConnections)
	for range users {
		u, err := a.DB().UserCreate(ctx, "bench-"+persistence.NewUUID())
		if err != nil {
			tb.Fatal(err)
		}
		key, _, err := a.DB().APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID})
		if err != nil {
			tb.Fatal(err)
		}
		n.keys = append(n.keys, key)
	}
	return n
}

// call sends one request and decodes a JSON object answer.
func (n *benchNode) call(ctx context.Context, key, method, path string, body any) (int, map[string]any, error) {
	var rdr io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rdr = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.base+path, rdr)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: %d %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m, nil
}

// prepare creates, for every user, an environment and an agent using it,
// and returns the agent ids by user.
func (n *benchNode) prepare(tb testing.TB) []string {
	tb.Helper()
	ctx := context.Background()
	var agents []string
	for _, key := range n.keys {
		st, env, err := n.call(ctx, key, "POST", "/environments", map[string]any{
			"name": "bench", "env_vars": map[string]any{"FOO": "bar"}, "setup_script": "true",
		})
		if err != nil || st != 201 {
			tb.Fatalf("create environment: %d %v %v", st, env, err)
		}
		st, ag, err := n.call(ctx, key, "POST", "/agents", map[string]any{
			"name": "bench", "provider": "anthropic", "model": "claude-sonnet-4", "system": "SYS",
			"environment_id": env["id"],
		})
		if err != nil || st != 201 {
			tb.Fatalf("create agent: %d %v %v", st, ag, err)
		}
		agents = append(agents, ag["id"].(string))
	}
	return agents
}

// waitIdle waits until no session actor runs on the node.
func (n *benchNode) waitIdle(tb testing.TB, timeout time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	for n.app.Sessions().Live() > 0 {
		if time.Since(start) > timeout {
			tb.Fatalf("%d session actors still live after %s", n.app.Sessions().Live(), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// statusCounts counts the sessions of every user by status.
func (n *benchNode) statusCounts(tb testing.TB) map[string]int {
	tb.Helper()
	out := map[string]int{}
	ctx := context.Background()
	for _, key := range n.keys {
		k, err := n.app.DB().APIKeyGetByRaw(ctx, key)
		if err != nil {
			tb.Fatal(err)
		}
		rows, err := n.app.DB().SessionList(ctx, k.UserID)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range rows {
			out[s.Status]++
		}
	}
	return out
}

func benchConcurrency(def int) int {
	if v, err := strconv.Atoi(os.Getenv("AOD_BENCH_CONCURRENCY")); err == nil && v > 0 {
		return v
	}
	return def
}

// runWorkers runs b.N jobs on c workers and returns the elapsed time.
func runWorkers(b *testing.B, c int, job func(worker, i int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	b.ResetTimer()
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := job(w, i); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return elapsed
}

// BenchmarkSessionCreate measures POST /sessions (202) throughput through
// the HTTP API, on SQLite and on Postgres, with one user (its creates
// serialise on the user's quota row) and with 16 users. The sandbox backend
// is in memory (provisioning execs exit 0 at once, the agent prints one line
// and exits 0), so every created session also runs its full provisioning
// and turn on the node's actors and database while the clients create more:
// the figure is the sustained create rate of the node, sandboxes excluded.
// After the timed loop the benchmark waits for every session to finish and
// checks that all completed.
func BenchmarkSessionCreate(b *testing.B) {
	conc := benchConcurrency(16)
	for _, d := range []migrations.Dialect{migrations.SQLite, migrations.Postgres} {
		for _, users := range []int{1, 16} {
			b.Run(fmt.Sprintf("db=%s/users=%d/clients=%d", d, users, conc), func(b *testing.B) {
				backend := newMemBackend(false)
				n := startBenchNode(b, d, backend, users, nil)
				agents := n.prepare(b)
				ctx := context.Background()
				commits0 := pgCommits(b, d)
				lats := make([]time.Duration, b.N)
				done := make([]time.Time, b.N)
				var doneN atomic.Int64
				start := time.Now()
				elapsed := runWorkers(b, conc, func(w, i int) error {
					u := w % users
					t0 := time.Now()
					st, ack, err := n.call(ctx, n.keys[u], "POST", "/sessions", map[string]any{
						"agent_id": agents[u], "prompt": "hello " + strconv.Itoa(i), "timeout": 600,
					})
					lats[i] = time.Since(t0)
					if err != nil {
						return err
					}
					if st != 202 {
						return fmt.Errorf("POST /sessions: %d %v", st, ack)
					}
					done[doneN.Add(1)-1] = time.Now()
					return nil
				})
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "creates/s")
				if q := b.N / 4; q > 0 {
					// The rate over the first and the last quarter of the
					// requests: a drop shows a cost growing with the rows.
					b.ReportMetric(float64(q)/done[q-1].Sub(start).Seconds(), "creates/s-q1")
					b.ReportMetric(float64(q)/done[b.N-1].Sub(done[b.N-1-q]).Seconds(), "creates/s-q4")
				}
				slices.Sort(lats)
				b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "ms-p50")
				b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "ms-p99")
				drain := n.waitIdle(b, 10*time.Minute)
				b.ReportMetric(drain.Seconds(), "s-drain")
				b.ReportMetric(float64(b.N)/(elapsed+drain).Seconds(), "completed/s")
				if d == migrations.Postgres {
					time.Sleep(1500 * time.Millisecond) // statistics flush
					b.ReportMetric(float64(pgCommits(b, d)-commits0)/float64(b.N), "commits/session")
				}
				counts := n.statusCounts(b)
				if counts[persistence.StatusCompleted] != b.N {
					b.Errorf("after the drain: %v, want %d completed", counts, b.N)
				}
				if got := backend.agentRuns.Load(); got != int64(b.N) {
					b.Errorf("agent execs: %d, want %d", got, b.N)
				}
				n.logs.report(b)
			})
		}
	}
}

// BenchmarkSessionLifecycle measures the full create → provisioned → turn
// completed rate: each client POSTs a session and follows its SSE stream to
// the exit event, then starts the next one. Sandboxes are real (the fake
// Sprites server runs each in bubblewrap; provisioning runs the generated
// script against the stand-in package managers and the stand-in claude CLI).
func BenchmarkSessionLifecycle(b *testing.B) {
	conc := benchConcurrency(8)
	fx, err := benchFixtures()
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []migrations.Dialect{migrations.SQLite, migrations.Postgres} {
		b.Run(fmt.Sprintf("db=%s/backend=fake-sprites/clients=%d", d, conc), func(b *testing.B) {
			srv := spritestest.NewServer(b, spritestest.Options{RunnerConfig: runner.Config{ExtraBinds: fx.binds}})
			n := startBenchNode(b, d, srv.Client(), 1, nil)
			agent := n.prepare(b)[0]
			key := n.keys[0]
			ctx := context.Background()
			lats := make([]time.Duration, b.N)
			done := make([]time.Time, b.N)
			var doneN atomic.Int64
			start := time.Now()
			elapsed := runWorkers(b, conc, func(_, i int) error {
				t0 := time.Now()
				st, ack, err := n.call(ctx, key, "POST", "/sessions", map[string]any{
					"agent_id": agent, "prompt": "hello " + strconv.Itoa(i), "timeout": 600,
				})
				if err != nil {
					return err
				}
				if st != 202 {
					return fmt.Errorf("POST /sessions: %d %v", st, ack)
				}
				id := ack["id"].(string)
				last, err := n.follow(ctx, key, id)
				if err != nil {
					return err
				}
				if last["type"] != "exit" || last["code"] != float64(0) {
					return fmt.Errorf("session %s ended with %v", id, last)
				}
				lats[i] = time.Since(t0)
				done[doneN.Add(1)-1] = time.Now()
				return nil
			})
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sessions/s")
			if q := b.N / 4; q > 0 {
				b.ReportMetric(float64(q)/done[q-1].Sub(start).Seconds(), "sessions/s-q1")
				b.ReportMetric(float64(q)/done[b.N-1].Sub(done[b.N-1-q]).Seconds(), "sessions/s-q4")
			}
			slices.Sort(lats)
			b.ReportMetric(float64(lats[len(lats)/2].Milliseconds()), "ms-p50")
			b.ReportMetric(float64(lats[len(lats)*99/100].Milliseconds()), "ms-p99")
			n.logs.report(b)
		})
	}
}

// follow reads the session's SSE stream to its terminal event.
func (n *benchNode) follow(ctx context.Context, key, id string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+id+"/stream", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("stream %s: %d", id, resp.StatusCode)
	}
	r := bufio.NewReader(resp.Body)
	var last map[string]any
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			if last == nil {
				return nil, fmt.Errorf("stream %s: %w", id, err)
			}
			return last, nil
		}
		if f.Comment != "" {
			continue
		}
		d, err := sse.DecodeData(f)
		if err != nil {
			return nil, err
		}
		last = d
	}
}

// benchPostgresURL is the package's test database URL plus the pgx
// connection parameters in AOD_BENCH_PG_PARAMS (for example
// "default_query_exec_mode=exec"), to compare pgx query modes.
func benchPostgresURL(tb testing.TB) string {
	u := persistencetest.PostgresURL(tb)
	if p := os.Getenv("AOD_BENCH_PG_PARAMS"); p != "" {
		if strings.Contains(u, "?") {
			return u + "&" + p
		}
		return u + "?" + p
	}
	return u
}

// pgCommits reads the committed-transaction count of the package's
// Postgres database (0 on SQLite).
func pgCommits(tb testing.TB, d migrations.Dialect) int64 {
	if d != migrations.Postgres {
		return 0
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, persistencetest.PostgresURL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

var (
	benchFxOnce sync.Once
	benchFx     *fixtures
	benchFxErr  error
)

// benchFixtures is sandboxFixtures for benchmarks (same files, built once).
func benchFixtures() (*fixtures, error) {
	benchFxOnce.Do(func() { benchFx, benchFxErr = buildFixtures() })
	return benchFx, benchFxErr
}
