package app

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
)

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal})
	id := n.session(n.agent(nil), "ok")
	n.waitDone(id, time.Minute)
	failed := n.session(n.agent(nil), "exit:2")
	n.waitDone(failed, time.Minute)

	resp, err := http.Get(n.base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	body := string(b)
	for _, want := range []string{
		`aod_session_turns_started_total{runtime="claude"} 2`,
		`aod_session_turns_finished_total{outcome="completed",runtime="claude"} 1`,
		`aod_session_turns_finished_total{outcome="failed",runtime="claude"} 1`,
		`aod_http_request_duration_seconds_count{code="202",method="POST",route="/sessions"} 2`,
		`aod_build_info{database="sqlite",sandbox="local",version="dev"} 1`,
		`aod_sse_clients 0`,
		`aod_session_turn_duration_seconds_count{runtime="claude"} 2`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		require.Contains(t, body, want)
	}
	require.Regexp(t, `aod_session_events_logged_total [1-9]`, body)
	require.NotContains(t, body, id, "no session ids in labels")
}
