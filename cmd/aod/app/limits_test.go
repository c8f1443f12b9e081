package app

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/local"
	"github.com/aodhq/aod/sprites/runner"
)

// TestSandboxLimits runs sessions whose setup scripts exceed the memory and
// the disk limit of the local backend, next to a normal session: each
// offending session fails its provisioning stage with the limit's evidence
// in the stream, the normal session completes, and /health stays ok while
// the limits are hit.
func TestSandboxLimits(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "sandboxes")
	limited, err := local.New(local.Config{Dir: dir, ExtraBinds: sandboxFixtures(t).binds,
		Limits: runner.Limits{Memory: 256 << 20, Pids: 128, Disk: 64 << 20}})
	require.NoError(t, err)
	require.NoError(t, limited.Check(context.Background()))
	t.Cleanup(func() { deleteSandboxes(limited, dir) })
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal,
		wrap: func(sprites.Backend) sprites.Backend { return limited }})

	balloon := n.mustCreate("/environments", map[string]any{"name": "balloon",
		"setup_script": "head -c 600M /dev/zero | tail >/dev/null"}, 201)["id"].(string)
	fill := n.mustCreate("/environments", map[string]any{"name": "fill",
		"setup_script": "dd if=/dev/zero of=$HOME/big bs=1M count=200 2>&1 | grep -o 'No space left on device' >&2; exit 1"}, 201)["id"].(string)
	agent := n.agent(nil)
	ids := map[string]string{
		"balloon": n.session(agent, "p", "environment_id", balloon),
		"fill":    n.session(agent, "p", "environment_id", fill),
		"normal":  n.session(agent, "p"),
	}
	// /health while the sandboxes hit their limits.
	healthDone := make(chan struct{})
	healthErr := make(chan string, 1)
	go func() {
		defer close(healthErr)
		for {
			select {
			case <-healthDone:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := http.Get(n.base + "/health")
			if err != nil {
				healthErr <- err.Error()
				return
			}
			var body struct {
				Status string `json:"status"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || body.Status != "ok" {
				healthErr <- resp.Status + " " + body.Status
				return
			}
		}
	}()

	failedStage := func(evs []streamEvent) string {
		for _, e := range evs {
			if e.typ() == "stage" && e.data["state"] == "failed" {
				return e.data["stage"].(string) + ": " + e.data["message"].(string)
			}
		}
		return ""
	}
	evs := n.waitDone(ids["balloon"], time.Minute)
	require.Equal(t, "error", evs[len(evs)-1].typ())
	msg := failedStage(evs)
	require.True(t, strings.HasPrefix(msg, "provision_setup: Provisioning script failed: exit 137\n"), msg)
	require.True(t, strings.HasSuffix(msg, "\naod: sandbox memory limit (256 MiB) reached; process killed\n"),
		"the balloon's stream must say the memory limit killed it: %q", msg)

	evs = n.waitDone(ids["fill"], time.Minute)
	require.Equal(t, "error", evs[len(evs)-1].typ())
	require.Equal(t, "provision_setup: Provisioning script failed: exit 1\nstderr:\nNo space left on device\n",
		failedStage(evs), "the disk fill must end with ENOSPC")

	evs = n.waitDone(ids["normal"], time.Minute)
	require.Equal(t, "exit", evs[len(evs)-1].typ(), outputText(evs, "stderr"))
	close(healthDone)
	for msg := range healthErr {
		t.Fatalf("/health failed while sandboxes hit their limits: %s", msg)
	}
	require.False(t, strings.Contains(n.logs.String(), "panic"))
}
