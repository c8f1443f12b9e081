package app

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
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
						evs := n.stream(ctx, id, "")
						err := ctx.Err()
						cancel()
						require.NoError(t, err, "a stream did not end")
						require.NotEmpty(t, evs)
						switch evs[len(evs)-1].typ() {
						case "exit":
						default:
							t.Errorf("unexpected terminal %v", evs[len(evs)-1].data)
						}
					}
				}()
			}
			for turn := 2; turn <= turns; turn++ {
				r := n.do("POST", "/sessions/"+id+"/prompt", map[string]any{"prompt": fmt.Sprintf("turn %d", turn)})
				require.Equal(t, 202, r.status, string(r.body))
				n.waitDone(id, 30*time.Second)
				require.Eventually(t, func() bool {
					return n.do("GET", "/sessions/"+id, nil).obj(t)["status"] == "completed"
				}, 30*time.Second, 5*time.Millisecond)
			}
			close(stop)
			readers.Wait()
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
