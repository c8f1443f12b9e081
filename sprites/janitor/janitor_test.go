package janitor_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/janitor"
	"github.com/aodhq/aod/sprites/spritestest"
)

func TestMain(m *testing.M) { os.Exit(persistencetest.WrapTestMain(m)) }

const waitTimeout = 30 * time.Second

type bundle struct {
	db      *persistence.DB
	fake    *spritestest.Server
	client  *sprites.Client
	kind    string
	janitor *janitor.Janitor
}

// setup gives a janitor over a real database and the fake Sprites server;
// each test has its own backend kind, so tests sharing the package database
// never see each other's records.
func setup(t *testing.T, db *persistence.DB, tune ...func(*janitor.Config)) *bundle {
	t.Helper()
	fake := spritestest.NewServer(t, spritestest.Options{})
	// One HTTP attempt per call: the janitor's own retries are under test.
	client := fake.Client(sprites.WithRetryPolicy(sprites.RetryPolicy{MaxAttempts: 1}))
	kind := "sprites-" + persistence.NewUUID()[:8]
	cfg := janitor.Config{
		Backend: kind, Interval: time.Hour, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Settle: time.Nanosecond,
	}
	for _, f := range tune {
		f(&cfg)
	}
	j := janitor.New(db, client, cfg, nil, nil)
	j.TestSignals.Init()
	t.Cleanup(j.Stop)
	return &bundle{db: db, fake: fake, client: client, kind: kind, janitor: j}
}

func (b *bundle) create(t *testing.T) string {
	t.Helper()
	name := "jan-" + persistence.NewUUID()[:12]
	_, err := b.client.Create(t.Context(), name)
	require.NoError(t, err)
	return name
}

func wait(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		require.Equal(t, want, got)
	case <-time.After(waitTimeout):
		t.Fatalf("no signal for %s within %s", want, waitTimeout)
	}
}

func TestJanitor(t *testing.T) {
	t.Parallel()

	t.Run("DestroysRecordedSandbox", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			b := setup(t, db)
			name := b.create(t)
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, name))
			require.NoError(t, b.janitor.Start(t.Context()))
			wait(t, b.janitor.TestSignals.Destroyed.C(), name)
			_, err := b.client.Get(t.Context(), name)
			require.ErrorIs(t, err, sprites.ErrNotFound, "the sandbox is gone")
			left, err := db.SandboxDestroysPending(t.Context(), b.kind)
			require.NoError(t, err)
			require.Empty(t, left, "the record is removed once the backend confirmed")
		})
	})

	t.Run("RetriesUntilBackendRecovers", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			b := setup(t, db)
			name := b.create(t)
			b.fake.SetFaults(spritestest.Faults{DeleteErrors: 3, ServerErrorStatus: 502})
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, name))
			require.NoError(t, b.janitor.Start(t.Context()))
			for range 3 {
				wait(t, b.janitor.TestSignals.Failed.C(), name)
			}
			// While it fails the record stays, with its attempts and error.
			wait(t, b.janitor.TestSignals.Destroyed.C(), name)
			_, err := b.client.Get(t.Context(), name)
			require.ErrorIs(t, err, sprites.ErrNotFound)
			left, err := db.SandboxDestroysPending(t.Context(), b.kind)
			require.NoError(t, err)
			require.Empty(t, left)
		})
	})

	t.Run("FailedAttemptIsRecorded", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			b := setup(t, db)
			name := b.create(t)
			b.fake.SetFaults(spritestest.Faults{DeleteErrors: 1000})
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, name))
			require.NoError(t, b.janitor.Start(t.Context()))
			wait(t, b.janitor.TestSignals.Failed.C(), name)
			wait(t, b.janitor.TestSignals.Failed.C(), name)
			b.janitor.Stop()
			left, err := db.SandboxDestroysPending(t.Context(), b.kind)
			require.NoError(t, err)
			require.Len(t, left, 1, "an unconfirmed destroy is never dropped")
			require.GreaterOrEqual(t, left[0].Attempts, 2)
			require.Contains(t, left[0].LastError, "503")
			_, err = b.client.Get(t.Context(), name)
			require.NoError(t, err, "the sandbox is still there")
		})
	})

	t.Run("LateCreateIsDestroyed", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			// A provisioning was creating the sandbox when the session was
			// terminated: the first delete finds nothing, the create lands
			// after it. The confirmation is repeated after Settle.
			b := setup(t, db, func(c *janitor.Config) { c.Settle = 2 * time.Second })
			name := "jan-" + persistence.NewUUID()[:12]
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, name))
			require.NoError(t, b.janitor.Start(t.Context()))
			wait(t, b.janitor.TestSignals.Deferred.C(), name)
			left, err := db.SandboxDestroysPending(t.Context(), b.kind)
			require.NoError(t, err)
			require.Len(t, left, 1, "an early confirmation is not final")
			_, err = b.client.Create(t.Context(), name)
			require.NoError(t, err)
			wait(t, b.janitor.TestSignals.Destroyed.C(), name)
			_, err = b.client.Get(t.Context(), name)
			require.ErrorIs(t, err, sprites.ErrNotFound, "the late sandbox is gone")
			left, err = db.SandboxDestroysPending(t.Context(), b.kind)
			require.NoError(t, err)
			require.Empty(t, left)
		})
	})

	t.Run("MissingSandboxIsDone", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			b := setup(t, db)
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, "jan-never-created"))
			require.NoError(t, b.janitor.Start(t.Context()))
			wait(t, b.janitor.TestSignals.Destroyed.C(), "jan-never-created")
		})
	})

	t.Run("WakeRunsAPassAtOnce", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			b := setup(t, db)
			require.NoError(t, b.janitor.Start(t.Context()))
			// The first pass found nothing; the interval is an hour.
			name := b.create(t)
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, name))
			b.janitor.Wake()
			wait(t, b.janitor.TestSignals.Destroyed.C(), name)
		})
	})

	t.Run("LeavesOtherBackendsAlone", func(t *testing.T) {
		t.Parallel()
		persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
			b := setup(t, db)
			other := "other-" + persistence.NewUUID()[:8]
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), other, "jan-elsewhere"))
			mine := b.create(t)
			require.NoError(t, db.SandboxDestroyAdd(t.Context(), b.kind, mine))
			require.NoError(t, b.janitor.Start(t.Context()))
			wait(t, b.janitor.TestSignals.Destroyed.C(), mine)
			b.janitor.Stop()
			left, err := db.SandboxDestroysPending(t.Context(), other)
			require.NoError(t, err)
			require.Len(t, left, 1, "another backend's record is not this node's to destroy")
		})
	})

	t.Run("StartStopStress", func(t *testing.T) {
		t.Parallel()
		b := setup(t, persistencetest.SQLite(t))
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				for range 50 {
					require.NoError(t, b.janitor.Start(context.Background()))
					b.janitor.Wake()
					b.janitor.Stop()
				}
			})
		}
		wg.Wait()
		b.janitor.Stop()
	})
}
