package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/sprites"
)

// TestManagerChurnStress: 10 goroutines × 50 cycles of Kick, Subscribe,
// Publish, Unsubscribe and Terminate over a few shared sessions whose turns
// run and finish, so actors are spawned, retire and are re-created
// concurrently. Nothing may deadlock, panic, leak an actor or a goroutine
// (goleak in TestMain), and Stop must return in time.
func TestManagerChurnStress(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{WriterQueue: 2})
	var ids []string
	for range 4 {
		ids = append(ids, b.session(t))
	}
	// The agents: each prints a few lines and exits.
	agentsDone := make(chan struct{})
	stopAgents := make(chan struct{})
	go func() {
		defer close(agentsDone)
		for {
			select {
			case p := <-b.backend.started:
				for i := range 5 {
					p.write(sprites.Stdout, fmt.Sprintf("out %d\n", i))
				}
				p.exit(0)
			case <-stopAgents:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 10*50)
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range 50 {
				id := ids[(g+c)%len(ids)]
				b.m.Kick(id)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				sub, live, _, err := b.m.Subscribe(ctx, id)
				switch {
				case err != nil:
					errs <- fmt.Errorf("subscribe: %w", err)
				case live:
					select {
					case <-sub.C():
					case <-ctx.Done():
					}
					b.m.Unsubscribe(sub)
				}
				if _, err := b.m.Publish(ctx, id, "pub"); err != nil && !errors.Is(err, ErrNotRunning) && !errors.Is(err, errWriterStopped) {
					errs <- fmt.Errorf("publish: %w", err)
				}
				cancel()
				if c == 45 && g == 0 {
					b.m.Terminate(ids[0])
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	close(stopAgents)
	<-agentsDone
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, b.m.Stop(ctx))
	require.Equal(t, 0, b.m.Live())
}

// TestReconcilerStartStopStress: concurrent Start/Stop cycles (River's
// startstoptest shape) never race, deadlock or leak the loop goroutine.
func TestReconcilerStartStopStress(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{})
	r := NewReconciler(b.m, time.Millisecond)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_ = r.Start(context.Background()) // always nil
				r.Stop()
			}
		}()
	}
	wg.Wait()
	r.Stop()
}
