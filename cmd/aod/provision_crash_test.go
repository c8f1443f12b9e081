package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/runtimes/runtimestest"
)

// standinsDir is the host directory of the stand-ins bound into sandboxes.
func standinsDir(t *testing.T, env []string) string {
	t.Helper()
	src, _, ok := strings.Cut(envValue(env, "AOD_LOCAL_BINDS"), ":")
	require.True(t, ok)
	return src
}

// blockStandin makes the stand-in invocation `what` block (see
// runtimestest.BlockFile) and returns a channel that receives once it runs.
func blockStandin(t *testing.T, dir, what string) <-chan string {
	t.Helper()
	fifo := filepath.Join(dir, runtimestest.BlockedFIFO)
	require.NoError(t, unix.Mkfifo(fifo, 0o666))
	require.NoError(t, os.Chmod(fifo, 0o666))
	require.NoError(t, os.WriteFile(filepath.Join(dir, runtimestest.BlockFile), []byte(what+"\n"), 0o644))
	got := make(chan string, 1)
	go func() {
		// Opening for reading waits for the stand-in to open for writing.
		b, err := os.ReadFile(fifo)
		if err == nil {
			got <- strings.TrimSpace(string(b))
		}
	}()
	t.Cleanup(func() {
		// Unblock the reader if the stand-in never ran.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	return got
}

// waitHungRequest waits (bounded) until the fake Sprites process holds a
// hung request of that method and path suffix.
func waitHungRequest(t *testing.T, env []string, method, suffix string) {
	t.Helper()
	require.Eventually(t, func() bool {
		req, err := http.NewRequest("GET", envValue(env, "SPRITES_BASE_URL")+"/_fake/requests", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+envValue(env, "SPRITES_API_KEY"))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var log struct {
			Requests []struct {
				Method, Path string
				Status       int
			} `json:"requests"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&log))
		for _, r := range log.Requests {
			if r.Method == method && strings.HasSuffix(r.Path, suffix) && r.Status == 0 {
				return true
			}
		}
		return false
	}, 2*time.Minute, 20*time.Millisecond, "no hung %s …%s request", method, suffix)
}

// sessionHandle reads the session's sandbox handle from the node's SQLite
// file (a second connection; SQLite's WAL mode allows it while aod runs).
func sessionHandle(t *testing.T, env []string, id string) string {
	t.Helper()
	db, err := persistence.Open(context.Background(), persistence.Options{
		SQLitePath: filepath.Join(envValue(env, "AOD_DATA_DIR"), "aod.db"), Sealer: persistencetest.Sealer(t)})
	require.NoError(t, err)
	defer db.Close()
	s, err := db.SessionGet(context.Background(), 0, id)
	require.NoError(t, err)
	return s.BackendHandle
}

// TestCrashDuringProvisioning kills aod with SIGKILL while provisioning is
// inside a given stage (a stand-in of that stage blocks until the kill), or
// in the middle of a turn, on both backends. After the restart the session
// completes (provisioning is redone idempotently, a running turn is
// re-attached), exactly one sandbox exists — the session's — and after a
// terminate none does: nothing is orphaned.
func TestCrashDuringProvisioning(t *testing.T) {
	t.Parallel()
	type hang struct{ method, suffix, file string }
	stages := []struct {
		stage string
		block string // stand-in invocation that blocks
		hang  *hang  // Sprites call that hangs (fake backend only)
		// neither: mid-turn
	}{
		{stage: "create_sprite", hang: &hang{"POST", "/v1/sprites", ""}},
		{stage: "install_runtime", block: "claude update"},
		{stage: "network_policy", hang: &hang{"POST", "/policy/network", ""}},
		{stage: "env_file", hang: &hang{"PUT", "/fs/write", "/tmp/aod-env"}},
		{stage: "provision_setup", block: "apt-get"},
		{stage: "runtime_config", hang: &hang{"PUT", "/fs/write", "/home/sprite/.claude.json"}},
		{stage: "skills", block: "npx"},
		{stage: "turn"},
	}
	for _, backend := range []string{"local", "fake"} {
		for _, st := range stages {
			if st.hang != nil && backend == "local" {
				continue // in-process calls: nothing to hang
			}
			t.Run(backend+"/"+st.stage, func(t *testing.T) {
				t.Parallel()
				env, sandboxes := recoveryEnv(t, backend)
				var blocked <-chan string
				if st.block != "" {
					blocked = blockStandin(t, standinsDir(t, env), st.block)
				}
				if st.hang != nil {
					setFakeFaults(t, env, map[string]any{"hang_requests": 1, "hang_method": st.hang.method,
						"hang_path_suffix": st.hang.suffix, "hang_file": st.hang.file})
				}
				p1 := startServe(t, env, true)
				key := p1.key
				envBody := map[string]any{"name": "e", "packages": map[string]any{"apt": []any{"jq"}}}
				if backend == "fake" {
					envBody["networking"] = map[string]any{"type": "limited", "allowed_hosts": []any{"github.com"}}
				}
				envID := p1.api(t, key, "POST", "/environments", envBody)["id"]
				agent := p1.api(t, key, "POST", "/agents", map[string]any{
					"name": "a", "provider": "anthropic", "model": "m", "environment_id": envID,
					"skills":      []any{map[string]any{"type": "github", "source": "acme/skills", "name": "remote", "description": "Remote"}},
					"mcp_servers": []any{map[string]any{"name": "docs", "url": "https://mcp.example/docs"}},
				})
				prompt := "hi"
				if st.stage == "turn" {
					prompt = "slow:60"
				}
				id := p1.api(t, key, "POST", "/sessions", map[string]any{"agent_id": agent["id"], "prompt": prompt})["id"].(string)
				switch {
				case st.block != "":
					select {
					case got := <-blocked:
						require.Equal(t, st.block, got)
					case <-time.After(2 * time.Minute):
						t.Fatalf("stage %s never ran its stand-in:\n%s", st.stage, p1.stderr.String())
					}
				case st.hang != nil:
					waitHungRequest(t, env, st.hang.method, st.hang.suffix)
				default:
					readStream(t, p1.base, key, id, func(d map[string]any) bool { return hasLine(d, "line 0005") })
				}
				if st.stage != "turn" {
					// The stage has started and cannot finish.
					evs := readStream(t, p1.base, key, id, func(d map[string]any) bool {
						return d["type"] == "stage" && d["stage"] == st.stage && d["state"] == "started"
					})
					require.Equal(t, "started", evs[len(evs)-1]["state"])
				}
				require.NoError(t, p1.cmd.Process.Signal(syscall.SIGKILL))
				_ = p1.cmd.Wait()
				if st.block != "" {
					require.NoError(t, os.Remove(filepath.Join(standinsDir(t, env), runtimestest.BlockFile)))
				}
				if st.hang != nil {
					setFakeFaults(t, env, map[string]any{})
				}

				p2 := startServe(t, env, false)
				evs := readStream(t, p2.base, key, id, nil)
				last := evs[len(evs)-1]
				require.Equal(t, "exit", last["type"], "%v\n%s", last, p2.stderr.String())
				require.Equal(t, float64(0), last["code"])
				out := streamText(evs, "stdout")
				if st.stage == "turn" {
					for i := 1; i <= 60; i++ {
						require.Equal(t, 1, strings.Count(out, fmt.Sprintf("line %04d\n", i)), "line %d exactly once", i)
					}
				} else {
					require.Equal(t, 1, strings.Count(out, "stdin: hi\n"), "the turn ran once")
				}
				s := p2.api(t, key, "GET", "/sessions/"+id, nil)
				require.Equal(t, "completed", s["status"])

				require.Equal(t, []string{sessionHandle(t, env, id)}, sandboxNames(t, sandboxes),
					"the session's sandbox is the only one")
				p2.api(t, key, "POST", "/sessions/"+id+"/terminate", nil)
				requireNoSandboxes(t, p2, sandboxes)
			})
		}
	}
}
