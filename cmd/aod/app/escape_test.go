package app

import (
	"context"
	"math"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/internal/leakcheck"
	"github.com/aodhq/aod/migrations"
)

// TestPlantedConfigFile: an environment's setup_script (code the sandbox
// controls) plants a FIFO or a symlink to /etc/shadow where aod then writes
// the Codex credentials (~/.codex/auth.json). The runtime_config stage must
// fail at once with a clear message, the session must end failed (not stay
// pending), nothing may leak, and the node must still stop in time.
// Not parallel: it counts goroutines and threads.
func TestPlantedConfigFile(t *testing.T) {
	for _, tt := range []struct {
		name, plant string
		backend     backendKind
	}{
		{"fifo", "mkfifo ~/.codex/auth.json", backendLocal},
		{"symlink-shadow", "ln -s /etc/shadow ~/.codex/auth.json", backendLocal},
		{"symlink-home", "echo keep > ~/victim && ln -s ../victim ~/.codex/auth.json", backendLocal},
		{"fifo", "mkfifo ~/.codex/auth.json", backendFake},
	} {
		t.Run(tt.name+"/"+string(tt.backend), func(t *testing.T) {
			http.DefaultClient.CloseIdleConnections()
			goroutines := runtime.NumGoroutine()
			n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: tt.backend})
			env := n.mustCreate("/environments", map[string]any{"name": "plant",
				"setup_script": "mkdir -p ~/.codex && " + tt.plant}, 201)["id"].(string)
			agent := n.agent(map[string]any{"provider": "openai", "model": "gpt-5"})
			id := n.session(agent, "hi", "environment_id", env, "secret_env_vars", map[string]any{"OPENAI_API_KEY": "sk-planted"})

			evs := n.waitDone(id, 30*time.Second)
			var failed map[string]any
			for _, e := range evs {
				if e.typ() == "stage" && e.data["state"] == "failed" {
					failed = e.data
				}
			}
			require.NotNil(t, failed, "stages: %v", stages(evs))
			require.Equal(t, "runtime_config", failed["stage"])
			reason := map[string]string{"fifo": "a FIFO", "symlink-shadow": "a symlink", "symlink-home": "a symlink"}[tt.name]
			if tt.backend == backendLocal {
				require.Equal(t, "Failed to write runtime config: write file: write /home/sprite/.codex/auth.json: not a regular file ("+reason+")", failed["message"])
			} else {
				require.Contains(t, failed["message"], "Failed to write runtime config: ")
				require.Contains(t, failed["message"], "write /home/sprite/.codex/auth.json: not a regular file ("+reason+")")
			}
			require.Equal(t, "error", evs[len(evs)-1].typ())
			sess, err := n.app.DB().SessionGet(context.Background(), 0, id)
			require.NoError(t, err)
			require.Equal(t, "failed", sess.Status)

			shadow, err := os.ReadFile("/etc/shadow")
			require.NoError(t, err)
			require.NotContains(t, string(shadow), "sk-planted")

			// Graceful shutdown (what SIGTERM runs) finishes in time.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			require.NoError(t, n.app.Stop(ctx))
			require.Less(t, time.Since(start), 10*time.Second)
			http.DefaultClient.CloseIdleConnections()
			if tt.backend == backendFake {
				// The fake server still serves until the test's cleanup:
				// only the threads are counted.
				goroutines = math.MaxInt - 2
			}
			requireNoLeak(t, goroutines)
		})
	}
}

// requireNoLeak waits (up to 5s) for the goroutine count to fall back to
// goroutines (+2 for the database driver's and HTTP's stragglers) and for
// no OS thread of this process to be stuck in open(2), where a blocked
// open of a FIFO sits.
func requireNoLeak(t *testing.T, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, inOpen := runtime.NumGoroutine(), threadsInOpen(t)
		if g <= goroutines+2 && inOpen == 0 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("leaked: goroutines %d → %d, %d threads blocked in open(2)\n%s", goroutines, g, inOpen, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// threadsInOpen counts this process's threads blocked in open/openat.
func threadsInOpen(t *testing.T) int {
	t.Helper()
	n, err := leakcheck.ThreadsInOpen()
	require.NoError(t, err)
	return n
}
