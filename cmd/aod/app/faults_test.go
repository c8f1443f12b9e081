package app

// The fault suite of issue 9 (docs/reliability.md): Postgres unreachable
// mid-turn through a TCP proxy the test controls, a private Postgres
// restarted mid-turn, SQLite on a full filesystem, and Sprites 429 storms
// and 5xx bursts from the fake server's fault API. Each test states its
// pass condition in its doc comment. `make soak` runs them at full length
// (AOD_SOAK=1).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/internal/faultproxy"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/sprites/spritestest"
)

// soak reports a `make soak` run: faults at their full length.
func soak() bool { return os.Getenv("AOD_SOAK") == "1" }

// outageLength is how long the Postgres outage tests keep the database
// away: 60 s under soak (the figure, longer than the writer's
// ~54 s retry budget), 8 s otherwise (inside the budget: the retry path).
// AOD_FAULT_OUTAGE overrides both.
func outageLength(t *testing.T) time.Duration {
	if v := os.Getenv("AOD_FAULT_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "AOD_FAULT_OUTAGE")
		return d
	}
	if soak() {
		return 60 * time.Second
	}
	return 8 * time.Second
}

// faultDBTimeout is the AOD_DB_TIMEOUT the fault tests run with: requests
// during an outage must answer 503 within it (plus slack).
const faultDBTimeout = 2 * time.Second

// failFastSlack is what a 503 may take beyond AOD_DB_TIMEOUT.
const failFastSlack = 1500 * time.Millisecond

// slowPrompt makes the stand-in agent print "line 0001".."line N", one
// every 50 ms, so the turn outlives d by about 12 s.
func slowPrompt(d time.Duration) (string, int) {
	n := int((d + 12*time.Second) / (50 * time.Millisecond))
	return fmt.Sprintf("slow:%d", n), n
}

var numberedLine = regexp.MustCompile(`(?m)^line (\d{4})$`)

// requireLinesOnce checks the stdout of evs holds "line 0001".."line N"
// exactly once each, in order.
func requireLinesOnce(t *testing.T, evs []streamEvent, n int) {
	t.Helper()
	out := outputText(evs, "stdout")
	var got []int
	for _, m := range numberedLine.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		got = append(got, v)
	}
	var missing, dup, disorder int
	seen := map[int]int{}
	for i, v := range got {
		seen[v]++
		if seen[v] == 2 {
			dup++
		}
		if i > 0 && v <= got[i-1] {
			disorder++
		}
	}
	for i := 1; i <= n; i++ {
		if seen[i] == 0 {
			missing++
		}
	}
	require.Zero(t, missing+dup+disorder, "lines 1..%d exactly once in order: %d lines seen, %d missing, %d duplicated, %d out of order",
		n, len(got), missing, dup, disorder)
	require.Len(t, got, n)
}

// streamRead is one SSE connection's outcome, without require (safe off
// the test goroutine).
type streamRead struct {
	status int
	evs    []streamEvent
	err    error
}

func (n *node) readStream(ctx context.Context, sessionID, lastEventID string) streamRead {
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+sessionID+"/stream", nil)
	if err != nil {
		return streamRead{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+n.key)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return streamRead{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return streamRead{status: resp.StatusCode}
	}
	r := bufio.NewReader(resp.Body)
	out := streamRead{status: 200}
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out.err = err
			}
			return out
		}
		if f.Comment != "" {
			continue
		}
		d, err := sse.DecodeData(f)
		if err != nil {
			out.err = err
			return out
		}
		out.evs = append(out.evs, streamEvent{idLine: f.ID, data: d, raw: f.Data})
	}
}

// waitOutput streams sessionID until an output event contains substr.
func (n *node) waitOutput(sessionID, substr string, timeout time.Duration) {
	n.t.Helper()
	n.waitEvent(sessionID, "output "+substr, timeout, func(d map[string]any) bool {
		return d["type"] == "output" && strings.Contains(fmt.Sprint(d["data"]), substr)
	})
}

// waitEvent streams sessionID until an event satisfies match.
func (n *node) waitEvent(sessionID, what string, timeout time.Duration, match func(map[string]any) bool) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+sessionID+"/stream", nil)
	require.NoError(n.t, err)
	req.Header.Set("Authorization", "Bearer "+n.key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(n.t, err)
	defer resp.Body.Close()
	require.Equal(n.t, 200, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	for {
		f, err := sse.ReadEvent(r)
		require.NoError(n.t, err, "the stream ended before %s", what)
		if f.Comment != "" {
			continue
		}
		d, err := sse.DecodeData(f)
		require.NoError(n.t, err)
		if match(d) {
			return
		}
		require.NotContains(n.t, []string{"exit", "error", "terminated", "stale"}, d["type"], "the turn ended before %s", what)
	}
}

// liveReader follows a session's stream like a client that reconnects
// with Last-Event-ID whenever its connection ends early, until a terminal
// event. Its result is every event, once per id.
type liveReader struct {
	done chan struct{}
	evs  []streamEvent
	// reconnects counts connections after the first; refused counts those
	// answered with a non-200 status (503 during an outage).
	reconnects, refused int
	err                 error
}

func (n *node) followReconnecting(ctx context.Context, sessionID string) *liveReader {
	lr := &liveReader{done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		last := ""
		for attempt := 0; ; attempt++ {
			if attempt > 0 {
				lr.reconnects++
				select {
				case <-time.After(200 * time.Millisecond): // a client's reconnect delay
				case <-ctx.Done():
					lr.err = ctx.Err()
					return
				}
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			r := n.readStream(rctx, sessionID, last)
			cancel()
			if ctx.Err() != nil {
				lr.err = ctx.Err()
				return
			}
			if r.status != 200 {
				lr.refused++
				continue
			}
			for _, e := range r.evs {
				if e.typ() == "start" {
					continue
				}
				lr.evs = append(lr.evs, e)
				if e.idLine != "" {
					last = e.idLine
				}
				switch e.typ() {
				case "exit", "error", "terminated":
					return
				}
			}
		}
	}()
	return lr
}

// probe is one request made while the database is away.
type probe struct {
	method, path string
	body         any
}

// requireFailsFast makes the probes (concurrently, as clients would) and
// requires each to answer 503 within AOD_DB_TIMEOUT plus slack: a request
// never hangs on a missing database.
func (n *node) requireFailsFast(probes []probe) {
	n.t.Helper()
	type result struct {
		status int
		body   []byte
		err    error
		took   time.Duration
	}
	results := make([]result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			status, body, err := n.doTimeout(p.method, p.path, p.body, faultDBTimeout+10*time.Second)
			results[i] = result{status, body, err, time.Since(start)}
		}()
	}
	wg.Wait()
	for i, p := range probes {
		r := results[i]
		require.NoError(n.t, r.err, "%s %s during the outage", p.method, p.path)
		require.Equal(n.t, 503, r.status, "%s %s during the outage: %s", p.method, p.path, r.body)
		if p.path == "/health" {
			require.Contains(n.t, string(r.body), `"status":"degraded"`)
		} else {
			require.JSONEq(n.t, `{"detail":"Service unavailable"}`, string(r.body))
		}
		require.Less(n.t, r.took, faultDBTimeout+failFastSlack, "%s %s took %s", p.method, p.path, r.took)
	}
}

// doTimeout is do with a client deadline and errors returned, not required.
func (n *node) doTimeout(method, path string, body any, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var rdr io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rdr = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, n.base+path, rdr)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

func outageProbes(sessionID string) []probe {
	return []probe{
		{"GET", "/agents", nil},
		{"GET", "/sessions/" + sessionID, nil},
		{"GET", "/sessions/" + sessionID + "/turns", nil},
		{"GET", "/sessions/" + sessionID + "/stream", nil},
		{"POST", "/agents", map[string]any{"name": "during-outage", "provider": "anthropic", "model": "m"}},
		{"GET", "/health", nil},
	}
}

// probeDuring runs the probes every 2 s while the outage of length d,
// begun at start, lasts (at least one round; none that could outlast it).
func (n *node) probeDuring(start time.Time, d time.Duration, probes []probe) int {
	n.t.Helper()
	rounds := 0
	for rounds == 0 || time.Until(start.Add(d)) > faultDBTimeout+failFastSlack {
		n.requireFailsFast(probes)
		rounds++
		select {
		case <-time.After(2 * time.Second):
		case <-time.After(time.Until(start.Add(d))):
		}
	}
	return rounds
}

// pgProxy starts a fault proxy in front of a fresh Postgres database and
// returns it with the database URL through it.
func pgProxy(t *testing.T) (*faultproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(persistencetest.FreshPostgresURL(t))
	require.NoError(t, err)
	p, err := faultproxy.New(u.Host, faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	return p, u.String()
}

// TestFaultPostgresOutage cuts the node's Postgres connections in the
// middle of a turn that prints numbered lines, for outageLength (60 s under
// soak), in both ways a network fails: connections reset (fast errors) and
// blackholed (silence). Pass: every request made during the outage answers
// 503 within AOD_DB_TIMEOUT + 1.5 s; after the restore the turn completes
// with exit 0, every line is in the log exactly once, in order (replay from
// the start), a client that kept reconnecting saw the same, and the API
// answers again.
func TestFaultPostgresOutage(t *testing.T) {
	t.Parallel()
	// The writer's commit budget either outlasts the outage (its retries
	// carry the turn through) or not (defect 2: the work stops without an
	// outcome and the reconciler resumes it from the last committed batch).
	for _, tc := range []struct {
		name   string
		mode   faultproxy.Mode
		budget time.Duration
	}{
		{"reset", faultproxy.Reset, 0},
		{"blackhole", faultproxy.Blackhole, 0},
		{"reset/past-budget", faultproxy.Reset, 2 * time.Second},
		{"blackhole/past-budget", faultproxy.Blackhole, 2 * time.Second},
	} {
		mode := tc.mode
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxy, dbURL := pgProxy(t)
			n := startNode(t, nodeOpts{backend: backendLocal, actors: actors.Config{CommitBudget: tc.budget}, env: map[string]string{
				"DATABASE_URL": dbURL, "AOD_DB_TIMEOUT": faultDBTimeout.String(), "AOD_RECONCILE_INTERVAL": "500ms"}})
			d := outageLength(t)
			prompt, lines := slowPrompt(d)
			id := n.session(n.agent(nil), prompt, "timeout", 600)
			n.waitOutput(id, "line 0010", 2*time.Minute)
			ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
			defer cancel()
			live := n.followReconnecting(ctx, id)

			start := time.Now()
			proxy.Cut(mode)
			rounds := n.probeDuring(start, d, outageProbes(id))
			time.Sleep(time.Until(start.Add(d))) // the outage's planned end
			proxy.Restore()
			t.Logf("%s outage of %s: %d probe rounds, all 503 within %s", mode, d, rounds, faultDBTimeout+failFastSlack)

			evs := n.waitDone(id, d+3*time.Minute)
			require.Equal(t, "exit", evs[len(evs)-1].typ(), "the turn completes: %s", evs[len(evs)-1].raw)
			require.Equal(t, float64(0), evs[len(evs)-1].data["code"])
			requireLinesOnce(t, evs, lines)

			<-live.done
			require.NoError(t, live.err)
			require.Equal(t, "exit", live.evs[len(live.evs)-1].typ())
			requireLinesOnce(t, live.evs, lines)
			t.Logf("live client: %d reconnects, %d refused", live.reconnects, live.refused)

			s := n.do("GET", "/sessions/"+id, nil)
			require.Equal(t, 200, s.status, string(s.body))
			require.Equal(t, "completed", s.obj(t)["status"])
		})
	}
}

// pgBinDir finds Debian's PostgreSQL server binaries: 15 when installed
// (this machine's server), else the newest /usr/lib/postgresql/N/bin.
func pgBinDir() string {
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/initdb"); err == nil {
		return "/usr/lib/postgresql/15/bin"
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestN := "", -1
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(d))))
		if err == nil && v > bestN {
			best, bestN = filepath.Dir(d), v
		}
	}
	return best
}

// privatePostgres is a Postgres instance of the test's own, so restarting
// it disturbs nobody else on the machine.
type privatePostgres struct {
	t         *testing.T
	bin       string
	dir, data string
	port      int
	cred      *syscall.Credential
	url       string
}

// startPrivatePostgres initdb's and starts an instance as the postgres OS
// user on a free port. It skips when the binaries are missing (fails under
// CI=true).
func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("the PostgreSQL server binaries (initdb, pg_ctl in /usr/lib/postgresql/N/bin) are required under CI")
		}
		t.Skip("PostgreSQL server binaries not found in /usr/lib/postgresql/N/bin (apt-get install postgresql)")
	}
	pgUser, err := user.Lookup("postgres")
	require.NoError(t, err, "the postgres OS user")
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	dir, err := os.MkdirTemp("", "aod-private-pg-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chown(dir, uid, gid))
	p := &privatePostgres{t: t, bin: bin, dir: dir, data: filepath.Join(dir, "data"),
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.port = ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	p.run("initdb", "-D", p.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	p.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	p.start()
	t.Cleanup(func() { p.ctl("stop", "-m", "immediate") })
	return p
}

func (p *privatePostgres) run(name string, args ...string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	out, err := cmd.CombinedOutput()
	require.NoError(p.t, err, "%s %v: %s", name, args, out)
}

// ctl runs pg_ctl, logging rather than failing (cleanup uses it).
func (p *privatePostgres) ctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, "pg_ctl"), append([]string{"-D", p.data}, args...)...)
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Logf("pg_ctl %v: %v: %s", args, err, out)
	}
	return err
}

func (p *privatePostgres) start() {
	p.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c max_connections=60 -c fsync=off", p.port, p.dir)
	require.NoError(p.t, p.ctl("-w", "-t", "60", "-l", filepath.Join(p.dir, "log"), "-o", opts, "start"))
}

func (p *privatePostgres) stop(mode string) {
	p.t.Helper()
	require.NoError(p.t, p.ctl("-w", "-t", "60", "-m", mode, "stop"))
}

// TestFaultPostgresRestart restarts the node's (private) Postgres in the
// middle of a turn that prints numbered lines: a fast shutdown (sessions
// told to go) and an immediate one (a crash, WAL recovery at start), each
// down for a few seconds. Pass: requests while it is down answer 503 fast;
// the turn completes with exit 0 and every line is in the log exactly
// once, in order.
func TestFaultPostgresRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			pg := startPrivatePostgres(t)
			n := startNode(t, nodeOpts{backend: backendLocal, env: map[string]string{
				"DATABASE_URL": pg.url, "AOD_DB_TIMEOUT": faultDBTimeout.String()}})
			down := 5 * time.Second
			prompt, lines := slowPrompt(down + 5*time.Second)
			id := n.session(n.agent(nil), prompt, "timeout", 600)
			n.waitOutput(id, "line 0010", 2*time.Minute)

			pg.stop(mode)
			start := time.Now()
			n.requireFailsFast(outageProbes(id))
			time.Sleep(time.Until(start.Add(down)))
			pg.start()

			evs := n.waitDone(id, 3*time.Minute)
			require.Equal(t, "exit", evs[len(evs)-1].typ(), "the turn completes: %s", evs[len(evs)-1].raw)
			requireLinesOnce(t, evs, lines)
			s := n.do("GET", "/sessions/"+id, nil)
			require.Equal(t, 200, s.status, string(s.body))
			require.Equal(t, "completed", s.obj(t)["status"])
		})
	}
}

// sizedTmpfs mounts a tmpfs of size bytes at a new directory (root only;
// skips otherwise, fails under CI=true).
func sizedTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the disk-full test needs root (it mounts a tmpfs)")
		}
		t.Skip("the disk-full test needs root (it mounts a tmpfs)")
	}
	dir, err := os.MkdirTemp("", "aod-full-")
	require.NoError(t, err)
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	require.NoError(t, err, "mount tmpfs: %s", out)
	t.Cleanup(func() {
		_ = exec.Command("umount", "-l", dir).Run()
		_ = os.RemoveAll(dir)
	})
	return dir
}

// fillDisk writes a file into dir until the filesystem is full and
// returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	for _, chunk := range []int{1 << 20, 64 << 10, 4 << 10, 512, 1} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				require.ErrorIs(t, err, syscall.ENOSPC)
				break
			}
		}
	}
	return path
}

// TestFaultSQLiteDiskFull runs a node whose data dir (the SQLite file) is
// a 24 MiB tmpfs, and fills it during a turn that prints numbered lines.
// Pass: a write that needs space answers 503 {"detail": "Service
// unavailable"} (SQLITE_FULL is an unavailability, not a 500) and the node
// logs it; once space returns the same write succeeds, the turn completes
// with every line exactly once in order, nothing is left running, and
// PRAGMA integrity_check says ok.
func TestFaultSQLiteDiskFull(t *testing.T) {
	t.Parallel()
	dir := sizedTmpfs(t, 24<<20)
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal, env: map[string]string{
		"AOD_DATA_DIR": dir, "AOD_DB_TIMEOUT": faultDBTimeout.String()}})
	full := 5 * time.Second
	prompt, lines := slowPrompt(full)
	id := n.session(n.agent(nil), prompt, "timeout", 600)
	n.waitOutput(id, "line 0010", 2*time.Minute)

	filler := fillDisk(t, dir)
	start := time.Now()
	big := map[string]any{"name": "big", "provider": "anthropic", "model": "m", "system": strings.Repeat("s", 256<<10)}
	status, body, err := n.doTimeout("POST", "/agents", big, faultDBTimeout+10*time.Second)
	require.NoError(t, err)
	require.Equal(t, 503, status, "a write on a full disk: %s", body)
	require.JSONEq(t, `{"detail":"Service unavailable"}`, string(body))
	require.Less(t, time.Since(start), faultDBTimeout+failFastSlack)
	require.Contains(t, n.logs.String(), "database or disk is full", "the node logs the cause")
	// Reads still work.
	r := n.do("GET", "/sessions/"+id, nil)
	require.Equal(t, 200, r.status, string(r.body))
	time.Sleep(time.Until(start.Add(full)))
	require.NoError(t, os.Remove(filler))

	status, body, err = n.doTimeout("POST", "/agents", big, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, 201, status, "the same write once space returns: %.200s", body)
	evs := n.waitDone(id, 3*time.Minute)
	require.Equal(t, "exit", evs[len(evs)-1].typ(), "the turn completes: %s", evs[len(evs)-1].raw)
	requireLinesOnce(t, evs, lines)
	s := n.do("GET", "/sessions/"+id, nil).obj(t)
	require.Equal(t, "completed", s["status"])

	var check []string
	require.NoError(t, n.app.DB().Bun().NewRaw("PRAGMA integrity_check").Scan(context.Background(), &check))
	require.Equal(t, []string{"ok"}, check)
}

// TestFaultSpritesStorms drives sessions on the fake Sprites server while
// its fault API answers 429 storms and 5xx bursts: on create, during
// provisioning, on the lookup that starts a second turn. Pass: within the
// client's retry budget the session completes, each stage is done exactly
// once and the output is there exactly once; past the budget the session
// ends failed with the failing stage and a clear message, never stuck
// pending or running.
func TestFaultSpritesStorms(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		faults spritestest.Faults
		// second: inject before the second turn's prompt, not at create.
		second bool
		// afterCreate: inject once create_sprite is done (the provisioning
		// stages' REST calls: policy, file writes).
		afterCreate bool
		// fails: the budget runs out; the session must fail cleanly.
		fails bool
	}{
		{name: "create429", faults: spritestest.Faults{CreateRateLimited: 3, RetryAfterSeconds: 1}},
		{name: "burst5xx", faults: spritestest.Faults{ServerErrors: 3, ServerErrorStatus: 502}},
		{name: "provision5xx", faults: spritestest.Faults{ServerErrors: 3, ServerErrorStatus: 500}, afterCreate: true},
		{name: "prompt5xx", faults: spritestest.Faults{ServerErrors: 3, ServerErrorStatus: 503}, second: true},
		{name: "create429Exhausted", faults: spritestest.Faults{CreateRateLimited: 1000, RetryAfterSeconds: 1}, fails: true},
		{name: "burst5xxExhausted", faults: spritestest.Faults{ServerErrors: 1000, ServerErrorStatus: 500}, fails: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A database deadline shorter than the client's retries of the
			// prompt lookup (0.5+1+2 s): the backend call has its own bound.
			n := startNode(t, nodeOpts{dialect: migrations.Postgres, backend: backendFake, env: map[string]string{
				"AOD_DB_TIMEOUT": faultDBTimeout.String()}})
			agent := n.agent(nil)
			if !tc.second && !tc.afterCreate {
				n.fake.SetFaults(tc.faults)
			}
			id := n.session(agent, "slow:20", "timeout", 600)
			if tc.afterCreate {
				n.waitEvent(id, "create_sprite done", 2*time.Minute, func(d map[string]any) bool {
					return d["type"] == "stage" && d["stage"] == "create_sprite" && d["state"] == "done"
				})
				n.fake.SetFaults(tc.faults)
			}
			evs := n.waitDone(id, 4*time.Minute)
			last := evs[len(evs)-1]
			if tc.fails {
				n.fake.SetFaults(spritestest.Faults{})
				require.Equal(t, "error", last.typ(), "past the budget the session fails: %s", last.raw)
				st := stages(evs)
				require.Contains(t, st, "create_sprite:failed", "the failing stage is named: %v", st)
				var msg string
				for _, e := range evs {
					if e.typ() == "stage" && e.data["state"] == "failed" {
						msg = fmt.Sprint(e.data)
					}
				}
				require.Regexp(t, `(?i)rate limit|HTTP 5\d\d|internal`, msg, "a clear failure message")
				s := n.do("GET", "/sessions/"+id, nil).obj(t)
				require.Equal(t, "failed", s["status"])
				return
			}
			require.Equal(t, "exit", last.typ(), "%s", last.raw)
			requireLinesOnce(t, evs, 20)
			requireStagesOnce(t, evs)
			if tc.second {
				n.fake.SetFaults(tc.faults)
				ack := n.do("POST", "/sessions/"+id+"/prompt", map[string]any{"prompt": "slow:20"})
				require.Equal(t, 202, ack.status, string(ack.body))
				sctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
				defer cancel()
				next := n.stream(sctx, id, last.idLine)
				require.Equal(t, "exit", next[len(next)-1].typ(), "%s", next[len(next)-1].raw)
				requireLinesOnce(t, next, 20)
			}
			s := n.do("GET", "/sessions/"+id, nil).obj(t)
			require.Equal(t, "completed", s["status"])
			require.Zero(t, n.fake.Faults().ServerErrors+n.fake.Faults().CreateRateLimited, "every injected fault fired")
		})
	}
}

// requireStagesOnce checks each provisioning stage started and finished
// exactly once.
func requireStagesOnce(t *testing.T, evs []streamEvent) {
	t.Helper()
	count := map[string]int{}
	for _, s := range stages(evs) {
		count[s]++
	}
	for s, c := range count {
		require.Equal(t, 1, c, "stage event %s seen %d times", s, c)
		require.False(t, strings.HasSuffix(s, ":failed"), "stage %s", s)
	}
	require.NotZero(t, count["create_sprite:done"])
}
