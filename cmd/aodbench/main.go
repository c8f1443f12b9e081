// Command aodbench runs aod's streaming benchmarks against a child `aod
// serve` on loopback: chunk→client latency against a log-polling baseline,
// cost per delivery at 1,000 subscribers, replay throughput of a large
// session from Postgres, and fan-out to many subscribers over many
// sessions. Each benchmark starts its own node on a fresh Postgres database
// with the dev publish hook (D19), the local sandbox backend and a stand-in
// agent that prints timestamped lines.
//
//	go build -o /tmp/aod ./cmd/aod
//	go run ./cmd/aodbench -aod /tmp/aod -scale quick -bench latency,cost,replay,fanout
//
// -scale full runs the sizes of the issue (10,000 subscribers, 1M events);
// -scale quick runs each in well under a minute. Figures go to standard
// output as key=value lines and, with -json, to a JSON file.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	aodBin string
	pgURL  string
	keep   bool
	pool   int
	nice   int
	net    string

	// latency
	lines    int
	interval string
	clients  int

	// cost
	costSubs int
	costRate int
	dur      time.Duration
	payload  int
	idle     time.Duration

	// fan-out
	fanSessions int
	fanPerSess  int
	fanRate     int

	// replay
	replayEvents int
	insertBatch  int
}

func (o *options) server(env map[string]string) ServerOptions {
	e := map[string]string{"AOD_LOCAL_NETWORK": o.net}
	for k, v := range env {
		e[k] = v
	}
	return ServerOptions{Bin: o.aodBin, PGURL: o.pgURL, Keep: o.keep, Env: e, Nice: o.nice, PoolMaxConns: o.pool}
}

func main() {
	os.Exit(run())
}

func run() int {
	o := &options{}
	scale := flag.String("scale", "quick", "quick (reduced sizes) or full (the issue's sizes); explicit flags override")
	benches := flag.String("bench", "latency,cost,replay,fanout", "comma-separated benchmarks to run")
	jsonOut := flag.String("json", "", "also write the results to this JSON file")
	flag.StringVar(&o.aodBin, "aod", "/tmp/aod", "aod binary (go build -o /tmp/aod ./cmd/aod)")
	flag.StringVar(&o.pgURL, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "Postgres URL; a fresh database is created on this server per benchmark")
	flag.BoolVar(&o.keep, "keep", false, "keep the benchmark databases and data directories")
	flag.IntVar(&o.nice, "nice", 0, "if non-zero, run the tool, the node (and its sandboxes) and the database's Postgres backends at this nice value (e.g. -10) to shield the measurement from other load on a shared machine")
	flag.IntVar(&o.pool, "pool-max-conns", 0, "if non-zero, the node's Postgres pool size (pool_max_conns in DATABASE_URL; pgxpool's default is max(4, CPUs))")
	flag.StringVar(&o.net, "net", "private", "AOD_LOCAL_NETWORK for the sandboxes")
	flag.IntVar(&o.lines, "lines", 0, "latency: lines the agent prints")
	flag.StringVar(&o.interval, "interval", "0.01", "latency: seconds between lines")
	flag.IntVar(&o.clients, "clients", 1, "latency: SSE clients")
	flag.IntVar(&o.costSubs, "subs", 0, "cost: subscribers on one session")
	flag.IntVar(&o.costRate, "rate", 100, "cost: events per second")
	flag.DurationVar(&o.dur, "duration", 0, "cost and fanout: publishing window")
	flag.IntVar(&o.payload, "payload", 64, "cost and fanout: bytes per published event")
	flag.DurationVar(&o.idle, "idle", 5*time.Second, "cost and fanout: quiet window measuring the node's idle CPU before publishing")
	flag.IntVar(&o.fanSessions, "fan-sessions", 0, "fanout: sessions")
	flag.IntVar(&o.fanPerSess, "fan-subs", 0, "fanout: subscribers per session")
	flag.IntVar(&o.fanRate, "fan-rate", 0, "fanout: events per second in total, round-robin over the sessions")
	flag.IntVar(&o.replayEvents, "events", 0, "replay: events in the session")
	flag.IntVar(&o.insertBatch, "insert-batch", 5000, "replay: events per LogAppend")
	cleanup := flag.Bool("cleanup", false, "delete the sandboxes and data directories earlier runs left in the temp dir (/tmp/aodbench-*) and exit")
	flag.Parse()
	if *cleanup {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "aodbench-*"))
		for _, d := range dirs {
			RemoveDataDir(context.Background(), d)
		}
		return 0
	}

	full := *scale == "full"
	def := func(p *int, quick, f int) {
		if *p == 0 {
			*p = quick
			if full {
				*p = f
			}
		}
	}
	def(&o.lines, 500, 6000)
	def(&o.costSubs, 200, 1000)
	def(&o.fanSessions, 10, 100)
	def(&o.fanPerSess, 100, 100)
	def(&o.fanRate, 100, 100)
	def(&o.replayEvents, 100_000, 1_000_000)
	if o.dur == 0 {
		o.dur = 10 * time.Second
		if full {
			o.dur = 60 * time.Second
		}
	}
	if _, err := os.Stat(o.aodBin); err != nil {
		fmt.Fprintf(os.Stderr, "aodbench: %v (build it: go build -o %s ./cmd/aod)\n", err, o.aodBin)
		return 2
	}
	// Many sockets on each side of loopback: raise the descriptor limit
	// (the child server inherits it).
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if o.nice != 0 && os.Getenv("AODBENCH_NICED") == "" {
		// Linux nice values are per thread: re-run the whole tool under
		// nice(1) so every thread, and the child server, start with it.
		self, err := os.Executable()
		if err == nil {
			var nicePath string
			if nicePath, err = exec.LookPath("nice"); err == nil {
				args := append([]string{"nice", "-n", strconv.Itoa(o.nice), self}, os.Args[1:]...)
				err = syscall.Exec(nicePath, args, append(os.Environ(), "AODBENCH_NICED=1"))
			}
		}
		fmt.Fprintln(os.Stderr, "aodbench: -nice:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var results []*Result
	code := 0
	for _, name := range strings.Split(*benches, ",") {
		name = strings.TrimSpace(name)
		var r *Result
		var err error
		fmt.Printf("== %s (scale %s) %s\n", name, *scale, time.Now().UTC().Format(time.RFC3339))
		switch name {
		case "latency":
			r, err = benchLatency(ctx, o)
		case "cost":
			r, err = benchDelivery(ctx, o, deliveryParams{name: "cost", sessions: 1, perSession: o.costSubs,
				rate: o.costRate, dur: o.dur, payload: o.payload, transports: 4})
		case "fanout":
			r, err = benchDelivery(ctx, o, deliveryParams{name: "fanout", sessions: o.fanSessions, perSession: o.fanPerSess,
				rate: o.fanRate, dur: o.dur, payload: o.payload, transports: 16})
		case "replay":
			r, err = benchReplay(ctx, o)
		default:
			err = fmt.Errorf("unknown benchmark %q", name)
		}
		if err != nil {
			fmt.Printf("%s: FAILED: %v\n", name, err)
			code = 1
			continue
		}
		printResult(r)
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"scale": *scale, "args": os.Args[1:], "results": results}, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "aodbench:", err)
			code = 1
		}
	}
	return code
}

func printResult(r *Result) {
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  param %s=%v\n", k, r.Params[k])
	}
	keys = keys[:0]
	for k := range r.Figures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := r.Figures[k]
		if f, ok := v.(float64); ok {
			fmt.Printf("  %s=%.3f\n", k, f)
			continue
		}
		fmt.Printf("  %s=%v\n", k, v)
	}
	for _, n := range r.Notes {
		fmt.Printf("  note: %s\n", n)
	}
}
