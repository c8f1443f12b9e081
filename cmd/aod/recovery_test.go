package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/runtimes/runtimestest"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/local"
)

var addrRE = regexp.MustCompile(`msg="aod serving" addr=([0-9.:]+)`)

// proc is a running aod process.
type proc struct {
	cmd    *exec.Cmd
	base   string
	key    string
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe starts `aod serve` and waits for its address (and, on first
// run, its bootstrap key).
func startServe(t *testing.T, env []string, wantKey bool) *proc {
	t.Helper()
	cmd := exec.Command(aodBin, "serve")
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderrPipe, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, stderr: &lockedBuffer{}}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrCh, keyCh := make(chan string, 1), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			p.stderr.Write([]byte(sc.Text() + "\n"))
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				addrCh <- m[1]
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := keyRE.FindStringSubmatch(sc.Text()); m != nil {
				keyCh <- m[1]
			}
		}
	}()
	select {
	case addr := <-addrCh:
		p.base = "http://" + addr
	case <-time.After(60 * time.Second):
		t.Fatalf("aod did not start:\n%s", p.stderr.String())
	}
	if wantKey {
		select {
		case p.key = <-keyCh:
		case <-time.After(10 * time.Second):
			t.Fatal("no bootstrap key")
		}
	}
	return p
}

func (p *proc) api(t *testing.T, key, method, path string, body any) map[string]any {
	t.Helper()
	var rdr io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rdr = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, p.base+path, rdr)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	require.Less(t, resp.StatusCode, 300, string(b))
	require.NoError(t, json.Unmarshal(b, &out), string(b))
	return out
}

// readStream reads the session's stream until it closes or until stop
// returns true for an event.
func readStream(t *testing.T, base, key, id string, stop func(map[string]any) bool) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/sessions/"+id+"/stream", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var out []map[string]any
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			require.NoError(t, ctx.Err())
			return out
		}
		if f.Comment != "" {
			continue
		}
		d, err := sse.DecodeData(f)
		require.NoError(t, err)
		out = append(out, d)
		if stop != nil && stop(d) {
			return out
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// recoveryEnv prepares a data dir and, for the fake Sprites backend, starts
// `aod dev fake-sprites` as its own process (it stays up while aod dies).
func recoveryEnv(t *testing.T, backend string) ([]string, string) {
	t.Helper()
	data := t.TempDir()
	standins := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, runtimestest.WriteStandins(standins))
	env := cleanEnv("AOD_DATA_DIR="+data, "AOD_LISTEN=127.0.0.1:0", "AOD_LOCAL_BINDS="+standins+":/usr/local/bin",
		"FIELD_ENCRYPTION_KEY="+persistencetest.TestKey, "AOD_SSE_HEARTBEAT=1s")
	sandboxes := filepath.Join(data, "sandboxes")
	if backend == "fake" {
		addr := freePort(t)
		fakeDir := filepath.Join(data, "fake")
		sandboxes = filepath.Join(fakeDir, "sandboxes")
		fake := exec.Command(aodBin, "dev", "fake-sprites", "--listen", addr, "--token", "fake-token", "--dir", fakeDir)
		fake.Env = env
		var fakeLog lockedBuffer
		fake.Stderr = &fakeLog
		require.NoError(t, fake.Start())
		t.Cleanup(func() { _ = fake.Process.Kill(); _ = fake.Wait() })
		require.Eventually(t, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		}, 30*time.Second, 20*time.Millisecond, "fake sprites did not start: %s", fakeLog.String())
		env = append(env, "SPRITES_API_KEY=fake-token", "SPRITES_BASE_URL=http://"+addr)
	}
	t.Cleanup(func() {
		b, err := local.New(local.Config{Dir: sandboxes})
		if err != nil {
			return
		}
		entries, _ := os.ReadDir(sandboxes)
		for _, e := range entries {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = b.Delete(ctx, e.Name())
			cancel()
		}
	})
	return env, sandboxes
}

// streamText concatenates the output events of one stream.
func streamText(evs []map[string]any, stream string) string {
	var b strings.Builder
	for _, d := range evs {
		if d["type"] == "output" && d["stream"] == stream {
			b.WriteString(d["data"].(string))
		}
	}
	return b.String()
}

func hasLine(d map[string]any, text string) bool {
	s, _ := d["data"].(string)
	return d["type"] == "output" && strings.Contains(s, text)
}

// crashMidTurn starts aod, runs a session whose agent prints `lines` lines
// slowly, waits until line `after` is out, and kills aod with SIGKILL. It
// returns the API key and the session id.
func crashMidTurn(t *testing.T, env []string, lines, after int) (key, id string) {
	t.Helper()
	p1 := startServe(t, env, true)
	key = p1.key
	agent := p1.api(t, key, "POST", "/agents", map[string]any{"name": "a", "provider": "anthropic", "model": "m"})
	sess := p1.api(t, key, "POST", "/sessions", map[string]any{"agent_id": agent["id"], "prompt": fmt.Sprintf("slow:%d", lines)})
	id = sess["id"].(string)
	want := fmt.Sprintf("line %04d", after)
	readStream(t, p1.base, key, id, func(d map[string]any) bool { return hasLine(d, want) })
	require.NoError(t, p1.cmd.Process.Signal(syscall.SIGKILL))
	_ = p1.cmd.Wait()
	return key, id
}

// TestCrashRecovery kills `aod serve` with SIGKILL in the middle of a turn
// and starts it again: the turn completes with all its output exactly once
// (D4, D5, D20).
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"local", "fake"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			env, _ := recoveryEnv(t, backend)
			key, id := crashMidTurn(t, env, 80, 5)

			p2 := startServe(t, env, false)
			evs := readStream(t, p2.base, key, id, nil)
			last := evs[len(evs)-1]
			require.Equal(t, "exit", last["type"], "%v\n%s", last, p2.stderr.String())
			require.Equal(t, float64(0), last["code"])
			out := streamText(evs, "stdout")
			for i := 1; i <= 80; i++ {
				require.Equal(t, 1, strings.Count(out, fmt.Sprintf("line %04d\n", i)), "line %d exactly once", i)
			}
			s := p2.api(t, key, "GET", "/sessions/"+id, nil)
			require.Equal(t, "completed", s["status"])
		})
	}
}

// TestCrashRecoveryExecGone: the agent process is lost while aod is down
// (its sandbox is destroyed); after the restart the turn fails with a
// stderr event that says why, and nothing stays running.
func TestCrashRecoveryExecGone(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"local", "fake"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			env, sandboxes := recoveryEnv(t, backend)
			key, id := crashMidTurn(t, env, 2000, 3)

			// Destroy the sandbox (and the exec in it) behind aod's back.
			b, err := local.New(local.Config{Dir: sandboxes})
			require.NoError(t, err)
			entries, err := os.ReadDir(sandboxes)
			require.NoError(t, err)
			require.NotEmpty(t, entries)
			for _, e := range entries {
				require.NoError(t, b.Delete(context.Background(), e.Name()))
			}

			p2 := startServe(t, env, false)
			evs := readStream(t, p2.base, key, id, nil)
			last := evs[len(evs)-1]
			require.Equal(t, "error", last["type"], "%v", last)
			stderr := streamText(evs, "stderr")
			require.Contains(t, stderr, "turn failed: ")
			require.Contains(t, stderr, "cannot be re-attached")
			s := p2.api(t, key, "GET", "/sessions/"+id, nil)
			require.Equal(t, "failed", s["status"])
		})
	}
}

// TestCrashRecoveryExecKilled: the agent process is killed while aod is
// down; after the restart the turn ends failed with the signal's exit code.
func TestCrashRecoveryExecKilled(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"local", "fake"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			env, sandboxes := recoveryEnv(t, backend)
			key, id := crashMidTurn(t, env, 2000, 3)

			// Kill the agent through the sandbox backend while aod is down.
			data := envValue(env, "AOD_DATA_DIR")
			db, err := persistence.Open(context.Background(), persistence.Options{
				SQLitePath: filepath.Join(data, "aod.db"), Sealer: persistencetest.Sealer(t)})
			require.NoError(t, err)
			s, err := db.SessionGet(context.Background(), 0, id)
			require.NoError(t, err)
			turn, err := db.TurnLatest(context.Background(), id)
			require.NoError(t, err)
			require.NoError(t, db.Close())
			require.NotEmpty(t, turn.ExecID)
			var b sprites.Backend
			if backend == "fake" {
				b = sprites.NewClient(envValue(env, "SPRITES_BASE_URL"), envValue(env, "SPRITES_API_KEY"))
			} else {
				b, err = local.New(local.Config{Dir: sandboxes})
				require.NoError(t, err)
			}
			require.NoError(t, b.Kill(context.Background(), s.BackendHandle, turn.ExecID, "KILL"))

			p2 := startServe(t, env, false)
			evs := readStream(t, p2.base, key, id, nil)
			last := evs[len(evs)-1]
			require.Equal(t, "exit", last["type"], "%v", last)
			require.Equal(t, float64(137), last["code"], "killed by SIGKILL")
			got := p2.api(t, key, "GET", "/sessions/"+id, nil)
			require.Equal(t, "failed", got["status"])
			require.Equal(t, float64(137), got["exit_code"])
		})
	}
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}
