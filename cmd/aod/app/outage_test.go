package app

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/actors/actorstest"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
)

// TestLogOutageLongerThanTheRetryBudget is defect 2 on the real stack: the
// database refuses the session's log (from the batch holding "line 0010")
// for longer than the writer's retry budget, mid-turn, while the agent
// keeps printing. The old writer dropped the batch and carried on, so those
// lines were lost for good; now the turn stops without an outcome, the
// reconciler resumes it once the log can be written, and every line is in
// the log exactly once, in order. The session is never left running
// without an actor: it completes with no client attached, resumed by the
// reconciler alone.
func TestLogOutageLongerThanTheRetryBudget(t *testing.T) {
	t.Parallel()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			var faults *actorstest.FaultStore
			n := startNode(t, nodeOpts{
				dialect: d, backend: backendLocal,
				env:    map[string]string{"AOD_RECONCILE_INTERVAL": "100ms"},
				actors: actors.Config{CommitBudget: 2 * time.Second},
				wrapStore: func(s actors.Store) actors.Store {
					faults = actorstest.NewFaultStore(s)
					return faults
				},
			})
			sig := &n.app.Sessions().TestSignals
			sig.Init(t)
			rsig := &n.app.Reconciler().TestSignals
			rsig.Init(t)
			faults.Inject(actorstest.Fault{
				Err: actorstest.ErrTransient, For: 5 * time.Second,
				Match: func(events []*persistence.Event) bool {
					for _, e := range events {
						if strings.Contains(e.Data, "line 0010") {
							return true
						}
					}
					return false
				},
			})
			const total = 120
			id := n.session(n.agent(nil), fmt.Sprintf("slow:%d", total), "timeout", 600)
			require.Error(t, sig.BatchAbandoned.WaitOrTimeout(), "the outage outlasts the budget")
			// No client is streaming: the reconciler alone resumes the turn
			// (a stream's re-subscribe would also spawn the actor).
			for rsig.Kicked.WaitOrTimeout() != id {
			}
			for {
				if sig.ActorRetired.WaitOrTimeout() != id {
					continue
				}
				st, _, err := n.app.DB().SessionStatus(t.Context(), id)
				require.NoError(t, err)
				if st != persistence.StatusPending && st != persistence.StatusRunning {
					break
				}
			}

			evs := n.waitDone(id, 2*time.Minute)
			require.Equal(t, "exit", evs[len(evs)-1].typ(), n.logs.String())
			var want strings.Builder
			for i := 1; i <= total; i++ {
				fmt.Fprintf(&want, "line %04d\n", i)
			}
			require.Equal(t, want.String(), numbered(logText(t, n, id)), "every line in the log exactly once, in order")
			require.Equal(t, want.String(), numbered(outputText(evs, "stdout")), "and on the stream")
			s := n.do("GET", "/sessions/"+id, nil).obj(t)
			require.Equal(t, "completed", s["status"])
			require.EqualValues(t, 0, s["exit_code"])
			require.Positive(t, faults.Failures())
			require.Contains(t, n.logs.String(), "session log append abandoned")
			resp, err := http.Get(n.base + "/metrics")
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Regexp(t, `aod_session_log_batches_abandoned_total [1-9]`, string(body))
			require.Regexp(t, `aod_session_reconciler_kicks_total [1-9]`, string(body))
		})
	}
}

// logText is the session's stdout as stored in the log.
func logText(t *testing.T, n *node, id string) string {
	t.Helper()
	evs, err := n.app.DB().EventsAfter(t.Context(), id, 0, 100_000)
	require.NoError(t, err)
	var b strings.Builder
	for _, e := range evs {
		if e.Kind == persistence.KindOutput && e.Stream == "stdout" {
			b.WriteString(e.Data)
		}
	}
	return b.String()
}

// numbered keeps the "line NNNN" lines of the stand-in agent's output.
func numbered(out string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if strings.HasPrefix(l, "line ") {
			b.WriteString(l)
		}
	}
	return b.String()
}
