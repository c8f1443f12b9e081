package app

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/http/sse"
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

// BenchmarkSessionLimits measures create → provisioned (the last stage
// done) and create → turn completed of one session at a time on the local
// backend with the sandbox limits on (the defaults) and off, alternating
// between the two in the same run, and reports the p50s and their ratio.
func BenchmarkSessionLimits(b *testing.B) {
	fx, err := benchFixtures()
	require.NoError(b, err)
	type side struct {
		name             string
		n                *benchNode
		agent            string
		provisioned, all []time.Duration
	}
	var sides []*side
	for _, l := range []struct {
		name   string
		limits runner.Limits
	}{{"on", runner.Limits{}}, {"off", runner.Limits{Off: true}}} {
		dir := filepath.Join(b.TempDir(), "sandboxes")
		be, err := local.New(local.Config{Dir: dir, ExtraBinds: fx.binds, Limits: l.limits})
		require.NoError(b, err)
		require.NoError(b, be.Check(context.Background()))
		b.Cleanup(func() { deleteSandboxes(be, dir) })
		n := startBenchNode(b, migrations.SQLite, be, 1, nil)
		sides = append(sides, &side{name: l.name, n: n, agent: n.prepare(b)[0]})
	}
	ctx := context.Background()
	i := 0
	for b.Loop() {
		for _, s := range sides {
			i++
			t0 := time.Now()
			st, ack, err := s.n.call(ctx, s.n.keys[0], "POST", "/sessions", map[string]any{
				"agent_id": s.agent, "prompt": "hello " + strconv.Itoa(i), "timeout": 600,
			})
			require.NoError(b, err)
			require.Equal(b, 202, st, "%v", ack)
			prov, last := followTimed(b, s.n, ack["id"].(string))
			require.Equal(b, "exit", last, "session %s", ack["id"])
			s.provisioned = append(s.provisioned, prov.Sub(t0))
			s.all = append(s.all, time.Since(t0))
		}
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	on, off := p50(sides[0].provisioned), p50(sides[1].provisioned)
	b.ReportMetric(on, "provisioned-ms-p50-on")
	b.ReportMetric(off, "provisioned-ms-p50-off")
	b.ReportMetric(on/off, "provisioned-ratio")
	b.ReportMetric(p50(sides[0].all), "completed-ms-p50-on")
	b.ReportMetric(p50(sides[1].all), "completed-ms-p50-off")
}

// followTimed reads a session's stream to its end and returns when the
// last provisioning stage was done and the terminal event's type.
func followTimed(b *testing.B, n *benchNode, id string) (provisioned time.Time, last string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+id+"/stream", nil)
	require.NoError(b, err)
	req.Header.Set("Authorization", "Bearer "+n.keys[0])
	resp, err := n.client.Do(req)
	require.NoError(b, err)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			return provisioned, last
		}
		if f.Comment != "" {
			continue
		}
		d, err := sse.DecodeData(f)
		require.NoError(b, err)
		last, _ = d["type"].(string)
		if last == "stage" && d["state"] == "done" {
			provisioned = time.Now()
		}
	}
}
