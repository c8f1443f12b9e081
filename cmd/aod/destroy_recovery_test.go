package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// setFakeFaults replaces the faults of the `aod dev fake-sprites` process.
func setFakeFaults(t *testing.T, env []string, faults map[string]any) {
	t.Helper()
	b, err := json.Marshal(faults)
	require.NoError(t, err)
	req, err := http.NewRequest("POST", envValue(env, "SPRITES_BASE_URL")+"/_fake/faults", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+envValue(env, "SPRITES_API_KEY"))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
}

// sandboxNames lists the sandboxes the backend holds (both backends keep
// one directory per sandbox under sandboxes).
func sandboxNames(t *testing.T, sandboxes string) []string {
	t.Helper()
	entries, err := os.ReadDir(sandboxes)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// requireNoSandboxes waits (bounded) for the restarted node's janitor to
// destroy every sandbox.
func requireNoSandboxes(t *testing.T, p *proc, sandboxes string) {
	t.Helper()
	require.Eventually(t, func() bool { return len(sandboxNames(t, sandboxes)) == 0 }, 60*time.Second, 50*time.Millisecond,
		"sandboxes left: %v\n%s", sandboxNames(t, sandboxes), p.stderr.String())
}

// TestCrashAfterTerminateDestroysSandbox (issue 9 defect 6): terminate or
// delete a session, kill -9 aod before the sandbox is destroyed, start it
// again: the sandbox is destroyed. On the fake Sprites backend the deletes
// are refused until aod is dead, so the kill always lands before the
// destroy; on the local backend the kill follows the API answer at once.
func TestCrashAfterTerminateDestroysSandbox(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"local", "fake"} {
		for _, op := range []string{"terminate", "delete"} {
			t.Run(backend+"/"+op, func(t *testing.T) {
				t.Parallel()
				env, sandboxes := recoveryEnv(t, backend)
				p1 := startServe(t, env, true)
				key := p1.key
				agent := p1.api(t, key, "POST", "/agents", map[string]any{"name": "a", "provider": "anthropic", "model": "m"})
				prompt := "slow:2000"
				if op == "delete" {
					prompt = "hi"
				}
				id := p1.api(t, key, "POST", "/sessions", map[string]any{"agent_id": agent["id"], "prompt": prompt})["id"].(string)
				if op == "terminate" {
					readStream(t, p1.base, key, id, func(d map[string]any) bool { return hasLine(d, "line 0003") })
				} else {
					evs := readStream(t, p1.base, key, id, nil)
					require.Equal(t, "exit", evs[len(evs)-1]["type"])
				}
				require.Len(t, sandboxNames(t, sandboxes), 1)
				if backend == "fake" {
					setFakeFaults(t, env, map[string]any{"delete_errors": 1000000})
				}
				if op == "terminate" {
					p1.api(t, key, "POST", "/sessions/"+id+"/terminate", nil)
				} else {
					p1.api(t, key, "DELETE", "/sessions/"+id+"/delete", nil)
				}
				require.NoError(t, p1.cmd.Process.Signal(syscall.SIGKILL))
				_ = p1.cmd.Wait()
				if backend == "fake" {
					require.Len(t, sandboxNames(t, sandboxes), 1, "the delete was refused while aod ran")
					setFakeFaults(t, env, map[string]any{})
				}

				p2 := startServe(t, env, false)
				requireNoSandboxes(t, p2, sandboxes)
			})
		}
	}
}
