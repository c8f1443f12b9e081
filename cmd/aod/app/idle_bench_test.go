package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

// BenchmarkIdleSessionActors measures the resident cost of live but idle
// session actors: N sessions (10,000 with AOD_BENCH_SCALE=full, else 1,000;
// AOD_BENCH_ACTORS overrides) are inserted with the store's SessionCreate,
// kicked with Manager.Kick, provisioned against an in-memory backend and
// left in a running turn whose exec never produces output. Once every
// session is running in the database and every agent exec is parked, it
// reports heap (runtime.MemStats.HeapAlloc after GC), RSS (VmRSS) and
// goroutines per actor, relative to the same process before the kicks.
// Run it with -benchtime=1x; b.N is ignored. AOD_BENCH_HEAPPROFILE=path
// writes an in-use heap profile at the measurement point.
func BenchmarkIdleSessionActors(b *testing.B) {
	n := 1000
	if os.Getenv("AOD_BENCH_SCALE") == "full" {
		n = 10000
	}
	if v, err := strconv.Atoi(os.Getenv("AOD_BENCH_ACTORS")); err == nil && v > 0 {
		n = v
	}
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		b.Run(fmt.Sprintf("db=%s/actors=%d", d, n), func(b *testing.B) {
			benchIdleActors(b, d, n)
		})
	}
}

func benchIdleActors(b *testing.B, d migrations.Dialect, n int) {
	ctx := context.Background()
	db := persistencetest.Open(b, d)
	if d == migrations.Postgres {
		// The package database, opened like persistencetest.Postgres (16
		// connections) plus AOD_BENCH_PG_PARAMS.
		var err error
		db, err = persistence.Open(ctx, persistence.Options{URL: benchPostgresURL(b), Sealer: persistencetest.Sealer(b), MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
	}
	u, err := db.UserCreate(ctx, "idle-"+persistence.NewUUID())
	if err != nil {
		b.Fatal(err)
	}
	agent := &persistence.Agent{UserID: u.ID, Name: "idle", Provider: "anthropic", Model: "claude-sonnet-4", Runtime: "claude",
		Skills: json.RawMessage("[]"), MCPServers: json.RawMessage("[]"), Metadata: json.RawMessage("{}")}
	if err := db.AgentCreate(ctx, agent); err != nil {
		b.Fatal(err)
	}
	// Insert the sessions (4 writers; Postgres serialises them on the
	// user's quota row anyway).
	ids := make([]string, n)
	insertStart := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				s := &persistence.Session{UserID: u.ID, AgentID: &agent.ID, Provider: "anthropic", Runtime: "claude",
					Backend: "sprites", BackendHandle: fmt.Sprintf("aod-idle%08d", i)}
				if _, err := db.SessionCreate(ctx, &persistence.SessionCreateParams{
					Session: s, Prompt: "wait", Timeout: 3600, DefaultLimit: 1 << 30,
				}); err != nil {
					errs <- err
					return
				}
				ids[i] = s.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.Logf("inserted %d sessions in %s", n, time.Since(insertStart).Round(time.Millisecond))

	backend := newMemBackend(true)
	logs := &logCounter{}
	m, err := actors.NewManager(actors.Deps{DB: db, Backend: backend, Logger: slog.New(logs)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		if err := m.Stop(sctx); err != nil {
			b.Errorf("stop: %v", err)
		}
		b.Logf("stopped %d actors in %s", n, time.Since(start).Round(time.Millisecond))
	})

	before := measure()
	b.ResetTimer()
	kickStart := time.Now()
	for _, id := range ids {
		m.Kick(id)
	}
	kicked := time.Since(kickStart)
	// Wait until every agent exec is parked and every session is running.
	deadline := time.Now().Add(15 * time.Minute)
	var running int
	for {
		parked := backend.parked()
		if parked == n {
			rows, err := db.SessionList(ctx, u.ID)
			if err != nil {
				b.Fatal(err)
			}
			running = 0
			for _, s := range rows {
				if s.Status == persistence.StatusRunning {
					running++
				}
			}
			if running == n {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("after 15m: %d execs parked, %d sessions running, %d actors live, of %d; logs: %d warn %d error",
				parked, running, m.Live(), n, logs.warns.Load(), logs.errors.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	allRunning := time.Since(kickStart)
	b.StopTimer()
	// Let the last exec-id writes land and the inbox goroutines park.
	time.Sleep(2 * time.Second)
	if live := m.Live(); live != n {
		b.Errorf("Manager.Live() = %d, want %d", live, n)
	}
	after := measure()
	if p := os.Getenv("AOD_BENCH_HEAPPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	b.ReportMetric(per(after.heap, before.heap), "heap-B/actor")
	b.ReportMetric(per(after.rss, before.rss), "rss-B/actor")
	b.ReportMetric(per(after.stack, before.stack), "stack-B/actor")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/actor")
	b.ReportMetric(allRunning.Seconds(), "s-to-running")
	b.ReportMetric(float64(n)/allRunning.Seconds(), "actors-started/s")
	b.Logf("kicked %d in %s; all running after %s; heap %d→%d MiB, rss %d→%d MiB, stacks %d→%d MiB, goroutines %d→%d",
		n, kicked.Round(time.Millisecond), allRunning.Round(time.Millisecond),
		before.heap>>20, after.heap>>20, before.rss>>20, after.rss>>20, before.stack>>20, after.stack>>20,
		before.goroutines, after.goroutines)
	logs.report(b)
}

type memSample struct {
	heap, stack, rss uint64
	goroutines       int
}

// measure collects garbage twice, returns freed pages to the OS, and
// samples the heap, goroutine stacks, RSS and goroutine count.
func measure() memSample {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, stack: ms.StackInuse, rss: vmRSS(), goroutines: runtime.NumGoroutine()}
}

// vmRSS is this process's resident set size in bytes (0 if unknown).
func vmRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
