package persistence_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

func TestSandboxDestroys(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := t.Context()
		kind := "k-" + persistence.NewUUID()[:8]
		require.NoError(t, db.SandboxDestroyAdd(ctx, kind, "a"))
		require.NoError(t, db.SandboxDestroyAdd(ctx, kind, "b"))
		require.NoError(t, db.SandboxDestroyAdd(ctx, kind, ""), "no handle, nothing to record")
		due, err := db.SandboxDestroysDue(ctx, kind, time.Now().Add(time.Second), 10)
		require.NoError(t, err)
		require.Len(t, due, 2)

		// A failure pushes the record out of the due set, keeping it.
		require.NoError(t, db.SandboxDestroyFailed(ctx, kind, "a", time.Now().Add(time.Hour), "HTTP 503 \x00 \xff"))
		due, err = db.SandboxDestroysDue(ctx, kind, time.Now().Add(time.Second), 10)
		require.NoError(t, err)
		require.Len(t, due, 1)
		require.Equal(t, "b", due[0].Handle)
		all, err := db.SandboxDestroysPending(ctx, kind)
		require.NoError(t, err)
		require.Len(t, all, 2)
		for _, d := range all {
			if d.Handle == "a" {
				require.Equal(t, 1, d.Attempts)
				require.Equal(t, "HTTP 503  ", d.LastError, "NUL and invalid UTF-8 are dropped")
			}
		}

		// Recording it again (a provisioning that was creating it) makes it
		// due at once and keeps its attempts.
		require.NoError(t, db.SandboxDestroyAdd(ctx, kind, "a"))
		due, err = db.SandboxDestroysDue(ctx, kind, time.Now().Add(time.Second), 10)
		require.NoError(t, err)
		require.Len(t, due, 2)
		require.NoError(t, db.SandboxDestroyDone(ctx, kind, "a"))
		require.NoError(t, db.SandboxDestroyDone(ctx, kind, "b"))
		all, err = db.SandboxDestroysPending(ctx, kind)
		require.NoError(t, err)
		require.Empty(t, all)
	})
}

// TestSessionDeleteRecordsSandboxDestroy: deleting a session forgets its
// sandbox only together with a destroy-pending record (issue 9 defect 6).
func TestSessionDeleteRecordsSandboxDestroy(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := t.Context()
		u := newUser(t, db)
		kind := "k-" + persistence.NewUUID()[:8]
		s := &persistence.Session{UserID: u.ID, Provider: "anthropic", Runtime: "claude", Backend: kind, BackendHandle: "aod-0123456789ab"}
		_, err := db.SessionCreate(ctx, &persistence.SessionCreateParams{Session: s, Prompt: "p", Timeout: 60, DefaultLimit: 10})
		require.NoError(t, err)
		require.NoError(t, db.LogAppend(ctx, nil, persistence.SetSession(s.ID, map[string]any{"status": persistence.StatusCompleted}, true)))
		_, err = db.SessionDelete(ctx, u.ID, s.ID)
		require.NoError(t, err)
		all, err := db.SandboxDestroysPending(ctx, kind)
		require.NoError(t, err)
		require.Len(t, all, 1)
		require.Equal(t, "aod-0123456789ab", all[0].Handle)
	})
}
