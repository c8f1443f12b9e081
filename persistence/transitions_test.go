package persistence_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

// TestGuardedStatusTransitions: a turn or session status change applies only
// from the statuses it names, reports whether it matched, and never
// rewrites a terminated session or a turn that terminate already failed.
func TestGuardedStatusTransitions(t *testing.T) {
	t.Parallel()
	active := []string{persistence.StatusPending, persistence.StatusRunning}
	cases := []struct {
		name                 string
		turnFrom, sessFrom   string // the statuses before the update
		turnGuard, sessGuard []string
		to                   string
		matched              bool
	}{
		{"pending to running", "pending", "pending", []string{"pending"}, active, "running", true},
		{"running to completed", "running", "running", active, active, "completed", true},
		{"failed turn stays failed", "failed", "terminated", []string{"pending"}, active, "running", false},
		{"terminated session stays terminated", "failed", "terminated", active, active, "completed", false},
		{"running turn is not restarted", "running", "running", []string{"pending"}, active, "running", false},
	}
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		u := newUser(t, db)
		for _, c := range cases {
			s := &persistence.Session{UserID: u.ID, Runtime: "claude", Backend: "sprites"}
			turn, err := db.SessionCreate(ctx, &persistence.SessionCreateParams{Session: s, Prompt: "p", Timeout: 600, DefaultLimit: 100})
			require.NoError(t, err)
			require.NoError(t, db.LogAppend(ctx, nil,
				persistence.SetTurn(turn.ID, map[string]any{"status": c.turnFrom}),
				persistence.SetSession(s.ID, map[string]any{"status": c.sessFrom}, false)))
			var turnMatched, sessMatched bool
			require.NoError(t, db.LogAppend(ctx, nil,
				persistence.SetTurnIf(turn.ID, c.turnGuard, map[string]any{"status": c.to}, &turnMatched),
				persistence.SetSessionIf(s.ID, c.sessGuard, map[string]any{"status": c.to}, &sessMatched)))
			require.Equal(t, c.matched, turnMatched, c.name)
			got, err := db.TurnLatest(ctx, s.ID)
			require.NoError(t, err)
			gs, err := db.SessionGet(ctx, 0, s.ID)
			require.NoError(t, err)
			if c.matched {
				require.Equal(t, c.to, got.Status, c.name)
				require.True(t, sessMatched, c.name)
				require.Equal(t, c.to, gs.Status, c.name)
			} else {
				require.Equal(t, c.turnFrom, got.Status, c.name)
				if c.sessFrom == persistence.StatusTerminated {
					require.False(t, sessMatched, c.name)
					require.Equal(t, persistence.StatusTerminated, gs.Status, c.name)
				}
			}
		}
	})
}

// TestOutputBytes counts stored output text in bytes (not characters), per
// session and per turn, on both dialects.
func TestOutputBytes(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		u := newUser(t, db)
		s := &persistence.Session{UserID: u.ID, Runtime: "claude", Backend: "sprites"}
		_, err := db.SessionCreate(ctx, &persistence.SessionCreateParams{Session: s, Prompt: "p", Timeout: 600, DefaultLimit: 100})
		require.NoError(t, err)
		one, two := 1, 2
		require.NoError(t, db.LogAppend(ctx, []*persistence.Event{
			{SessionID: s.ID, Turn: &one, Kind: persistence.KindOutput, Stream: "stdout", Data: "café\n"}, // 6 bytes
			{SessionID: s.ID, Kind: persistence.KindStage, Stage: "skills", State: "started", Data: "not output"},
			{SessionID: s.ID, Turn: &two, Kind: persistence.KindOutput, Stream: "stderr", Data: "1234"},
		}))
		sess, turn, err := db.OutputBytes(ctx, s.ID, 1)
		require.NoError(t, err)
		require.Equal(t, int64(10), sess)
		require.Equal(t, int64(6), turn)
		_, turn, err = db.OutputBytes(ctx, s.ID, 3)
		require.NoError(t, err)
		require.Zero(t, turn)
	})
}
