package actorstest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/actors/actorstest"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

func TestMain(m *testing.M) { os.Exit(persistencetest.WrapTestMain(m)) }

// TestFaultStore: each kind of fault fails exactly what it says, then heals.
func TestFaultStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := persistencetest.SQLite(t)
	u, err := db.UserCreate(ctx, "u")
	require.NoError(t, err)
	s := &persistence.Session{UserID: u.ID, Runtime: "claude", Backend: "sprites", BackendHandle: "x"}
	_, err = db.SessionCreate(ctx, &persistence.SessionCreateParams{Session: s, Prompt: "p", Timeout: 600, DefaultLimit: 10})
	require.NoError(t, err)
	ev := func(data string) []*persistence.Event {
		return []*persistence.Event{{SessionID: s.ID, Kind: persistence.KindOutput, Stream: "stdout", Data: data}}
	}
	f := actorstest.NewFaultStore(db)

	t.Run("Calls", func(t *testing.T) {
		f.Inject(actorstest.Fault{Err: actorstest.ErrTransient, Calls: 2})
		require.ErrorIs(t, f.LogAppend(ctx, ev("a")), actorstest.ErrTransient)
		require.ErrorIs(t, f.LogAppend(ctx, ev("b")), actorstest.ErrTransient)
		require.NoError(t, f.LogAppend(ctx, ev("c")), "healed after 2 calls")
		_, err := f.SessionsActive(ctx)
		require.NoError(t, err, "only LogAppend is targeted by default")
	})
	t.Run("ErrorClasses", func(t *testing.T) {
		for _, tc := range []struct {
			err       error
			permanent bool
		}{{actorstest.ErrTransient, false}, {actorstest.ErrForeignKey, true}, {actorstest.ErrUnique, true}, {context.DeadlineExceeded, false}} {
			f.Inject(actorstest.Fault{Err: tc.err, Calls: 1})
			err := f.LogAppend(ctx, ev("x"))
			require.ErrorIs(t, err, tc.err)
			require.Equal(t, tc.permanent, persistence.IsPermanent(err), "%v", tc.err)
		}
	})
	t.Run("ForAndMatch", func(t *testing.T) {
		f.Inject(actorstest.Fault{Err: actorstest.ErrTransient, For: 50 * time.Millisecond,
			Match: func(evs []*persistence.Event) bool { return evs[0].Data == "bad" }})
		require.NoError(t, f.LogAppend(ctx, ev("good")), "not matched")
		require.Error(t, f.LogAppend(ctx, ev("bad")))
		time.Sleep(60 * time.Millisecond) // the fault's own duration
		require.NoError(t, f.LogAppend(ctx, ev("bad")), "healed For after the first faulted call")
	})
	t.Run("OutageAndStall", func(t *testing.T) {
		release := make(chan struct{})
		f.Inject(actorstest.Fault{Stall: release, Methods: []string{actorstest.MethodAll}})
		done := make(chan error, 1)
		go func() { _, err := f.SessionGet(ctx, 0, s.ID); done <- err }()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, f.LogAppend(cctx, ev("x")), context.DeadlineExceeded, "a stall ends with the caller's context")
		close(release)
		require.NoError(t, <-done, "released, a stall with no error proceeds")
		f.Heal()
		_, err := f.TurnLatest(ctx, s.ID)
		require.NoError(t, err)
	})
}
