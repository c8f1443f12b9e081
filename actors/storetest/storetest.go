// Package storetest is the conformance suite of actors.Store: the
// behaviour the session actors rely on from their store, run against every
// implementation (Postgres and SQLite through persistence.DB today). Extend
// it with every change to the Store interface or to what the actors assume
// of it.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/persistence"
)

// Exercise runs the suite. open returns a fresh, migrated database; the
// suite seeds rows through it and checks the behaviour through its
// actors.Store view only.
func Exercise(t *testing.T, open func(tb testing.TB) *persistence.DB) {
	t.Helper()

	t.Run("SessionGetAndTurnLatest", func(t *testing.T) {
		t.Parallel()
		db := open(t)
		var st actors.Store = db
		f := seed(t, db)
		ctx := context.Background()
		s, err := st.SessionGet(ctx, 0, f.session)
		require.NoError(t, err)
		require.Equal(t, f.session, s.ID)
		require.Equal(t, persistence.StatusPending, s.Status)
		require.Equal(t, f.agent, *s.AgentID)
		_, err = st.SessionGet(ctx, 0, persistence.NewUUID())
		require.ErrorIs(t, err, persistence.ErrNotFound)

		tr, err := st.TurnLatest(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, 1, tr.TurnNumber)
		require.Equal(t, "the prompt", tr.Prompt)
		require.Equal(t, 600, tr.TimeoutSeconds)
		require.Equal(t, persistence.StatusPending, tr.Status)
		require.Zero(t, tr.StdoutOffset)
	})

	t.Run("LogAppendIDsIncreaseAndUpdatesApply", func(t *testing.T) {
		t.Parallel()
		db := open(t)
		var st actors.Store = db
		f := seed(t, db)
		ctx := context.Background()
		tr, err := st.TurnLatest(ctx, f.session)
		require.NoError(t, err)
		var prev int64
		for batch := range 3 {
			var evs []*persistence.Event
			for i := range 50 {
				evs = append(evs, output(f.session, string(rune('a'+batch))+string(rune('A'+i%26))))
			}
			require.NoError(t, st.LogAppend(ctx, evs, persistence.SetTurn(tr.ID, map[string]any{
				"stdout_offset": int64(batch + 1), "stderr_offset": int64(0),
			})))
			for _, e := range evs {
				require.Greater(t, e.ID, prev, "ids strictly increase within and across batches")
				prev = e.ID
			}
			stored, err := db.EventsAfter(ctx, f.session, evs[0].ID-1, 100)
			require.NoError(t, err)
			require.Len(t, stored, 50)
			for i, e := range stored {
				require.Equal(t, evs[i].ID, e.ID, "each event got its own row's id")
				require.Equal(t, evs[i].Data, e.Data)
			}
		}
		tr, err = st.TurnLatest(ctx, f.session)
		require.NoError(t, err)
		require.EqualValues(t, 3, tr.StdoutOffset, "offsets land with their batch")

		last, err := st.EventsLast(ctx, f.session)
		require.NoError(t, err)
		require.Len(t, last, 1)
		require.Equal(t, prev, last[0].ID)
	})

	t.Run("LogAppendIsAtomic", func(t *testing.T) {
		t.Parallel()
		db := open(t)
		var st actors.Store = db
		f := seed(t, db)
		ctx := context.Background()
		boom := errors.New("update failed")
		ev := output(f.session, "never")
		err := st.LogAppend(ctx, []*persistence.Event{ev},
			persistence.SetSession(f.session, map[string]any{"status": persistence.StatusRunning}, true),
			func(context.Context, bun.Tx) error { return boom })
		require.ErrorIs(t, err, boom)
		last, err := st.EventsLast(ctx, f.session)
		require.NoError(t, err)
		require.Empty(t, last, "a failed update rolls the events back")
		status, _, err := st.SessionStatus(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusPending, status, "and the other updates")
	})

	t.Run("LogAppendErrorClasses", func(t *testing.T) {
		t.Parallel()
		db := open(t)
		var st actors.Store = db
		ctx := context.Background()
		err := st.LogAppend(ctx, []*persistence.Event{output(persistence.NewUUID(), "x")})
		require.Error(t, err)
		require.True(t, persistence.IsPermanent(err), "a deleted session is permanent: %v", err)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err = st.LogAppend(cctx, []*persistence.Event{output(persistence.NewUUID(), "x")})
		require.Error(t, err)
		require.False(t, persistence.IsPermanent(err), "a dead context is not permanent: %v", err)
	})

	t.Run("StatusRules", func(t *testing.T) {
		t.Parallel()
		db := open(t)
		var st actors.Store = db
		ctx := context.Background()
		f := seed(t, db)
		set := func(status string, unlessTerminated bool) {
			require.NoError(t, st.LogAppend(ctx, nil, persistence.SetSession(f.session, map[string]any{"status": status, "exit_code": 0}, unlessTerminated)))
		}
		set(persistence.StatusRunning, true)
		s, code, err := st.SessionStatus(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusRunning, s)
		require.NotNil(t, code)

		active, err := st.SessionsActive(ctx)
		require.NoError(t, err)
		require.True(t, hasSession(active, f.session), "running is active")

		set(persistence.StatusTerminated, false)
		set(persistence.StatusCompleted, true)
		s, _, err = st.SessionStatus(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusTerminated, s, "nothing overwrites terminated")
		require.NoError(t, st.LogAppend(ctx, nil, persistence.FailUnfinishedTurns(f.session),
			persistence.SetSessionIfActive(f.session, map[string]any{"status": persistence.StatusFailed})))
		s, _, err = st.SessionStatus(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusTerminated, s, "an internal failure never rewrites a finished session")
		tr, err := st.TurnLatest(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusFailed, tr.Status, "but fails its unfinished turns")

		active, err = st.SessionsActive(ctx)
		require.NoError(t, err)
		require.False(t, hasSession(active, f.session), "terminated is not active")
		other := seed(t, db)
		active, err = st.SessionsActive(ctx)
		require.NoError(t, err)
		require.True(t, hasSession(active, other.session), "pending is active")
	})

	t.Run("ProvisioningReads", func(t *testing.T) {
		t.Parallel()
		db := open(t)
		var st actors.Store = db
		ctx := context.Background()
		f := seed(t, db)
		a, err := st.AgentGet(ctx, f.user, f.agent)
		require.NoError(t, err)
		require.Equal(t, "anthropic", a.Provider)
		_, err = st.AgentGet(ctx, f.user+1_000_000, f.agent)
		require.ErrorIs(t, err, persistence.ErrNotFound, "another user's agent")
		e, err := st.EnvironmentGet(ctx, f.user, f.env)
		require.NoError(t, err)
		require.Equal(t, "v", e.EnvVars["K"])
		res, err := st.SessionResources(ctx, f.session)
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.Equal(t, "ghp_secret", res[0].Token)
		secrets, err := st.SessionSecretEnvVars(ctx, f.session)
		require.NoError(t, err)
		require.Equal(t, map[string]string{"TOKEN": "s3cr3t"}, secrets)
	})
}

type fixture struct {
	user       int64
	agent, env string
	session    string
}

func seed(t *testing.T, db *persistence.DB) fixture {
	t.Helper()
	ctx := context.Background()
	u, err := db.UserCreate(ctx, "u-"+persistence.NewUUID())
	require.NoError(t, err)
	agent := &persistence.Agent{UserID: u.ID, Name: "a", Provider: "anthropic", Model: "claude-sonnet-4", Runtime: "claude",
		Skills: json.RawMessage("[]"), MCPServers: json.RawMessage("[]"), Metadata: json.RawMessage("{}")}
	require.NoError(t, db.AgentCreate(ctx, agent))
	env := &persistence.Environment{UserID: u.ID, Name: "e", Packages: json.RawMessage("{}"), EnvVars: map[string]string{"K": "v"},
		NetworkingType: "unrestricted", NetworkingConfig: json.RawMessage("{}")}
	require.NoError(t, db.EnvironmentCreate(ctx, env))
	s := &persistence.Session{UserID: u.ID, AgentID: &agent.ID, EnvironmentID: &env.ID, Runtime: "claude", Backend: "sprites", BackendHandle: "aod-x"}
	_, err = db.SessionCreate(ctx, &persistence.SessionCreateParams{
		Session: s, Prompt: "the prompt", Timeout: 600, DefaultLimit: 100,
		SecretEnvVars: map[string]string{"TOKEN": "s3cr3t"},
		Resources:     []persistence.Resource{{ResourceType: "github_repository", URL: "https://github.com/o/r", MountPath: "/workspace/r", Token: "ghp_secret"}},
	})
	require.NoError(t, err)
	return fixture{user: u.ID, agent: agent.ID, env: env.ID, session: s.ID}
}

func output(sessionID, data string) *persistence.Event {
	n := 1
	return &persistence.Event{SessionID: sessionID, Turn: &n, Kind: persistence.KindOutput, Stream: "stdout", Data: data}
}

func hasSession(ss []persistence.Session, id string) bool {
	for _, s := range ss {
		if s.ID == id {
			return true
		}
	}
	return false
}
