package app

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
)

// TestActorRespawnStress runs many short turns back to back on one session:
// every finished turn retires the session's actor and every prompt spawns
// it again, while other clients keep subscribing. No kick, subscription or
// event may be lost across those hand-overs.
func TestActorRespawnStress(t *testing.T) {
	t.Parallel()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: d, backend: backendMem})
			id := n.session(n.agent(nil), "turn 1")
			n.waitDone(id, time.Minute)
			const turns = 25
			stop := make(chan struct{})
			var readers sync.WaitGroup
			var mu sync.Mutex
			var results []streamResult
			for range 4 {
				readers.Add(1)
				go func() {
					defer readers.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						r := n.streamAll(ctx, id)
						cancel()
						mu.Lock()
						results = append(results, r)
						mu.Unlock()
						if r.err != nil {
							return
						}
					}
				}()
			}
			for turn := 2; turn <= turns; turn++ {
				r := n.do("POST", "/sessions/"+id+"/prompt", map[string]any{"prompt": fmt.Sprintf("turn %d", turn)})
				require.Equal(t, 202, r.status, string(r.body))
				n.waitDone(id, 30*time.Second)
				waitStatus(t, n, id, "completed")
			}
			close(stop)
			readers.Wait()
			// Every live reader saw each logged event exactly once, in order,
			// up to a turn's end: what follows its last event in the log is
			// the next turn's start, or nothing.
			rows, err := n.app.DB().EventsAfter(context.Background(), id, 0, 1_000_000)
			require.NoError(t, err)
			require.NotEmpty(t, results)
			for i, r := range results {
				require.NoError(t, r.err, "reader %d", i)
				require.Equal(t, "exit", r.terminal, "reader %d", i)
				require.LessOrEqual(t, len(r.ids), len(rows), "reader %d", i)
				want := make([]int64, len(r.ids))
				for j := range want {
					want[j] = rows[j].ID
				}
				require.Equal(t, want, r.ids, "reader %d: every logged event once, in order", i)
				if len(r.ids) < len(rows) {
					next := rows[len(r.ids)]
					require.True(t, next.Kind == persistence.KindStage && next.Stage == "runtime_start",
						"reader %d ended before the end of its turn: next logged event %+v", i, next)
				}
			}
			turnsData := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
			require.Len(t, turnsData, turns)
			for _, raw := range turnsData {
				require.Equal(t, "completed", raw.(map[string]any)["status"])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			all := n.stream(ctx, id, "")
			starts := 0
			for _, e := range all {
				if e.typ() == "stage" && e.data["stage"] == "runtime_start" {
					starts++
				}
			}
			require.Equal(t, turns, starts, "one runtime_start per turn, none lost or repeated")
			require.Equal(t, "exit", all[len(all)-1].typ())
		})
	}
}
