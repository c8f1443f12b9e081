package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/seal"
	"github.com/aodhq/aod/runtimes/runtimestest"
	"github.com/aodhq/aod/sprites/local"
)

// benchKey is the field-encryption key the child server and the tool's
// own database handle share.
const benchKey = "aodbench-field-encryption-key"

// benchAgent replaces the claude stand-in inside the sandbox. Its prompt
// carries directives, one per line:
//
//	emit:N:S   print N lines "@@<µs since the epoch>", sleeping S seconds after each
//	quiet:S    sleep S seconds without printing
//
// The timestamp is taken by the shell (EPOCHREALTIME, no fork) right before
// the line is written; the sandbox shares the host clock.
const benchAgent = `#!/bin/bash
prompt=$(cat)
printf '{"type":"system","subtype":"init","session_id":"%s"}\n' "$AOD_SESSION_ID"
while IFS= read -r line; do
  case "$line" in
    emit:*) spec=${line#emit:}; n=${spec%%:*}; iv=${spec#*:}
      for ((i=0; i<n; i++)); do t=${EPOCHREALTIME//[.,]/}; printf '@@%s\n' "$t"; sleep "$iv"; done ;;
    quiet:*) sleep "${line#quiet:}" ;;
  esac
done <<< "$prompt"
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","session_id":"%s"}\n' "$AOD_SESSION_ID"
`

// ServerOptions configure a child `aod serve`.
type ServerOptions struct {
	// Bin is the aod binary.
	Bin string
	// PGURL is a postgres:// URL of an existing database on the server
	// where a fresh benchmark database is created (and dropped on Close).
	PGURL string
	// Env adds or overrides environment variables.
	Env map[string]string
	// Keep leaves the database and data directory in place.
	Keep bool
	// Nice, when non-zero, is the scheduling priority given to the
	// database's Postgres backends (see Server.Prioritize); the tool and the
	// child get it from main.
	Nice int
	// PoolMaxConns, when non-zero, sets pool_max_conns in the node's
	// DATABASE_URL.
	PoolMaxConns int
}

// Server is a child `aod serve` process on a fresh Postgres database, with
// the dev publish hook on, the local sandbox backend and the benchmark
// stand-in agent bound at /usr/local/bin.
type Server struct {
	Base    string // http://127.0.0.1:port
	Key     string // bootstrap API key
	DBURL   string
	DataDir string
	LogPath string

	opts   ServerOptions
	dbName string
	cmd    *exec.Cmd
	exited chan error
	logf   *os.File
	client *http.Client
}

var keyRE = regexp.MustCompile(`Bearer (aod_[A-Za-z0-9_-]+)`)

// StartServer creates the database and data directory and starts the child.
func StartServer(ctx context.Context, o ServerOptions) (*Server, error) {
	s := &Server{opts: o, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	var err error
	if s.DataDir, err = os.MkdirTemp("", "aodbench-"); err != nil {
		return nil, err
	}
	s.dbName = fmt.Sprintf("aodbench_%d", time.Now().UnixNano())
	if err := pgExec(ctx, o.PGURL, "CREATE DATABASE "+s.dbName); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	s.DBURL, err = withDatabase(o.PGURL, s.dbName)
	if err != nil {
		return nil, err
	}
	nodeURL := s.DBURL
	if o.PoolMaxConns > 0 {
		sep := "?"
		if strings.Contains(nodeURL, "?") {
			sep = "&"
		}
		nodeURL += sep + "pool_max_conns=" + strconv.Itoa(o.PoolMaxConns)
	}
	bin := filepath.Join(s.DataDir, "bin")
	if err := runtimestest.WriteStandins(bin); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(bin, "claude"), []byte(benchAgent), 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"PATH":                            os.Getenv("PATH"),
		"HOME":                            os.Getenv("HOME"),
		"AOD_LISTEN":                      "127.0.0.1:" + port,
		"AOD_DATA_DIR":                    filepath.Join(s.DataDir, "data"),
		"DATABASE_URL":                    nodeURL,
		"FIELD_ENCRYPTION_KEY":            benchKey,
		"AOD_DEV_PUBLISH":                 "1",
		"AOD_SANDBOX":                     "local",
		"AOD_LOCAL_BINDS":                 bin + ":/usr/local/bin",
		"AOD_LOG_LEVEL":                   "warn",
		"DEFAULT_MAX_CONCURRENT_SESSIONS": "100000",
	}
	for k, v := range o.Env {
		env[k] = v
	}
	s.cmd = exec.Command(o.Bin, "serve")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for k, v := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	s.LogPath = filepath.Join(s.DataDir, "aod.log")
	if s.logf, err = os.Create(s.LogPath); err != nil {
		return nil, err
	}
	s.cmd.Stderr = s.logf
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.exited = make(chan error, 1)
	keyCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := keyRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case keyCh <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { s.exited <- s.cmd.Wait() }()
	s.Base = "http://127.0.0.1:" + port
	select {
	case s.Key = <-keyCh:
	case err := <-s.exited:
		return nil, fmt.Errorf("aod serve exited: %v (log %s)", err, s.LogPath)
	case <-time.After(60 * time.Second):
		s.Close()
		return nil, fmt.Errorf("aod serve printed no key within 60s (log %s)", s.LogPath)
	}
	for i := 0; ; i++ {
		if _, code, err := s.API(ctx, "GET", "/health", nil); err == nil && code > 0 {
			break
		}
		if i > 300 {
			s.Close()
			return nil, errors.New("aod serve did not answer /health")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s, nil
}

// Pid is the child's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Alive reports whether the child is still running.
func (s *Server) Alive() bool {
	select {
	case err := <-s.exited:
		s.exited <- err
		return false
	default:
		return true
	}
}

// Close stops the child with SIGTERM (SIGKILL after 30 s) and removes the
// database and data directory unless Keep.
func (s *Server) Close() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.logf != nil {
		_ = s.logf.Close()
	}
	if s.opts.Keep {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = pgExec(ctx, s.opts.PGURL, "DROP DATABASE IF EXISTS "+s.dbName+" WITH (FORCE)")
	RemoveDataDir(ctx, s.DataDir)
}

// RemoveDataDir deletes the sandboxes a node left in dir (a session's
// sandbox outlives its turns and the node; deleting unmounts its overlays)
// and then dir itself.
func RemoveDataDir(ctx context.Context, dir string) {
	sandboxes := filepath.Join(dir, "data", "sandboxes")
	if entries, err := os.ReadDir(sandboxes); err == nil && len(entries) > 0 {
		if b, err := local.New(local.Config{Dir: sandboxes}); err == nil {
			for _, e := range entries {
				if e.IsDir() {
					_ = b.Delete(ctx, e.Name())
				}
			}
		}
	}
	// Never follow into a sandbox root that is still mounted.
	if out, err := os.ReadFile("/proc/self/mounts"); err == nil && strings.Contains(string(out), " "+dir+"/") {
		return
	}
	_ = os.RemoveAll(dir)
}

// API performs one JSON API call and decodes an object answer.
func (s *Server) API(ctx context.Context, method, path string, body any) (map[string]any, int, error) {
	var rdr io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		rdr = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Base+path, rdr)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.Key)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp.StatusCode, err
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m == nil {
		m = map[string]any{"raw": string(b)}
	}
	return m, resp.StatusCode, nil
}

// Agent creates an agent served by the stand-in claude.
func (s *Server) Agent(ctx context.Context) (string, error) {
	m, code, err := s.API(ctx, "POST", "/agents", map[string]any{"name": "bench", "provider": "anthropic", "model": "claude-sonnet-4"})
	if err != nil {
		return "", err
	}
	if code != 201 {
		return "", fmt.Errorf("POST /agents: %d %v", code, m)
	}
	return m["id"].(string), nil
}

// Session creates a session with prompt and a 600 s turn timeout.
func (s *Server) Session(ctx context.Context, agentID, prompt string) (string, error) {
	m, code, err := s.API(ctx, "POST", "/sessions", map[string]any{"agent_id": agentID, "prompt": prompt, "timeout": 600})
	if err != nil {
		return "", err
	}
	if code != 202 {
		return "", fmt.Errorf("POST /sessions: %d %v", code, m)
	}
	return m["id"].(string), nil
}

// WaitStatus polls the session until it has one of the statuses.
func (s *Server) WaitStatus(ctx context.Context, id string, timeout time.Duration, want ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		m, _, err := s.API(ctx, "GET", "/sessions/"+id, nil)
		if err == nil {
			st, _ := m["status"].(string)
			for _, w := range want {
				if st == w {
					return st, nil
				}
			}
			if time.Now().After(deadline) {
				return st, fmt.Errorf("session %s is %q after %s, want %v", id, st, timeout, want)
			}
		} else if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Terminate ends a session's turn.
func (s *Server) Terminate(ctx context.Context, id string) {
	_, _, _ = s.API(ctx, "POST", "/sessions/"+id+"/terminate", nil)
}

// OpenDB opens the child's database with the tool's own store handle.
func (s *Server) OpenDB(ctx context.Context) (*persistence.DB, error) {
	sealer, err := seal.New(benchKey)
	if err != nil {
		return nil, err
	}
	return persistence.Open(ctx, persistence.Options{URL: s.DBURL, Sealer: sealer, MaxConns: 4})
}

// LogProblems counts WARN and ERROR lines in the child's log so far and
// returns up to five examples.
func (s *Server) LogProblems() (warn, errs int, examples []string) {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return 0, 0, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, "level=WARN"):
			warn++
		case strings.Contains(line, "level=ERROR"):
			errs++
		default:
			continue
		}
		if len(examples) < 5 {
			examples = append(examples, line)
		}
	}
	return warn, errs, examples
}

// Metric returns the value of a Prometheus sample line starting with name
// from GET /metrics, or -1 when the endpoint or the sample is missing.
func (s *Server) Metric(ctx context.Context, name string) float64 {
	req, err := http.NewRequestWithContext(ctx, "GET", s.Base+"/metrics", nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Authorization", "Bearer "+s.Key)
	resp, err := s.client.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return -1
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// ProcCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	self, _, err := procCPU(pid)
	return self, err
}

// procCPU returns utime+stime and cutime+cstime (waited-for children).
func procCPU(pid int) (self, children time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the parenthesised command name; utime, stime, cutime
	// and cstime are fields 14 to 17 (1-based) of the whole line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+2:]))
	var v [4]int64
	for k := range v {
		v[k], _ = strconv.ParseInt(f[11+k], 10, 64)
	}
	// USER_HZ is 100 on Linux.
	tick := 10 * time.Millisecond
	return time.Duration(v[0]+v[1]) * tick, time.Duration(v[2]+v[3]) * tick, nil
}

// ProcSched sums /proc/<pid>/task/*/schedstat over the process's current
// threads: time on a CPU and time spent runnable but waiting for one. A
// large wait relative to run time means the machine, not the process, is
// the bottleneck.
func ProcSched(pid int) (run, wait time.Duration) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		r, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		run += time.Duration(r)
		wait += time.Duration(w)
	}
	return run, wait
}

// ProcWrites returns a process's count of write-type system calls
// (syscw in /proc/<pid>/io), or -1.
func ProcWrites(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return -1
}

// ProcRSS returns a process's VmRSS in bytes.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// PostgresCPU sums the CPU time of the Postgres backends connected to
// database db (found by their process title): the database's share of
// making this node's events durable. Shared processes (WAL writer,
// checkpointer) and backends that already exited are not counted; the
// node's pool keeps its connections open.
func PostgresCPU(db string) time.Duration {
	entries, _ := os.ReadDir("/proc")
	var total time.Duration
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("postgres: ")) || !bytes.Contains(cmdline, []byte(" "+db+" ")) {
			continue
		}
		if d, err := ProcCPU(pid); err == nil {
			total += d
		}
	}
	return total
}

// cpuSample is the CPU time used so far by the aod node, its Postgres
// backends and this tool (the clients).
type cpuSample struct {
	aod, pg, self, run, wait time.Duration
	writes                   int64
}

func (s *Server) sampleCPU() cpuSample {
	a, _ := ProcCPU(s.Pid())
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	run, wait := ProcSched(s.Pid())
	return cpuSample{aod: a, pg: PostgresCPU(s.dbName), self: self, run: run, wait: wait, writes: ProcWrites(s.Pid())}
}

// Prioritize gives the Postgres backends serving this node's database the
// priority of ServerOptions.Nice (no-op when zero), so that a shared
// machine's other work disturbs the measurement less. Call it after the
// node opened its connections.
func (s *Server) Prioritize() {
	if s.opts.Nice == 0 {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("postgres: ")) || !bytes.Contains(cmdline, []byte(" "+s.dbName+" ")) {
			continue
		}
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, pid, s.opts.Nice)
	}
}

// LoadAvg returns the 1-minute load average of the machine.
func LoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

var pgMu sync.Mutex

func pgExec(ctx context.Context, url, sql string) error {
	pgMu.Lock()
	defer pgMu.Unlock()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func withDatabase(url, db string) (string, error) {
	q := ""
	if i := strings.IndexByte(url, '?'); i >= 0 {
		url, q = url[:i], url[i:]
	}
	i := strings.LastIndexByte(url, '/')
	if i < len("postgres://") {
		return "", fmt.Errorf("cannot find the database name in %q", url)
	}
	return url[:i+1] + db + q, nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}
