package persistence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

func newUser(t *testing.T, db *persistence.DB) *persistence.User {
	t.Helper()
	u, err := db.UserCreate(context.Background(), "u-"+persistence.NewUUID())
	require.NoError(t, err)
	return u
}

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := persistence.Open(ctx, persistence.Options{
		SQLitePath: filepath.Join(t.TempDir(), "a.db"), Sealer: persistencetest.Sealer(t),
	})
	require.NoError(t, err)
	defer db.Close()
	applied, err := db.Migrate(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, applied)
	require.NoError(t, db.Rollback(ctx))
	_, err = db.UserCount(ctx)
	require.Error(t, err, "tables must be gone after rollback")
	applied, err = db.Migrate(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, applied)
	again, err := db.Migrate(ctx)
	require.NoError(t, err)
	require.Empty(t, again, "a second migrate applies nothing")
}

func TestPostgresMigrateConcurrently(t *testing.T) {
	t.Parallel()
	// The package database is already migrated; concurrent Migrate calls
	// must serialise on the advisory lock and apply nothing.
	u := persistencetest.PostgresURL(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := persistence.Open(context.Background(), persistence.Options{URL: u, Sealer: persistencetest.Sealer(t)})
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			applied, err := db.Migrate(context.Background())
			if err == nil && len(applied) != 0 {
				err = fmt.Errorf("applied %v twice", applied)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestUsersAndKeys(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		u := newUser(t, db)
		_, err := db.UserCreate(ctx, u.Username)
		require.ErrorIs(t, err, persistence.ErrConflict)

		raw, k, err := db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, Name: "ci"})
		require.NoError(t, err)
		require.Len(t, raw, 47)
		require.Equal(t, raw[:12], k.KeyPrefix)
		got, err := db.APIKeyGetByRaw(ctx, raw)
		require.NoError(t, err)
		require.True(t, got.IsActive)
		require.Equal(t, u.ID, got.UserID)
		require.NotContains(t, got.KeyHash, raw)

		n, err := db.APIKeyRevoke(ctx, k.KeyPrefix)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		got, err = db.APIKeyGetByRaw(ctx, raw)
		require.NoError(t, err)
		require.False(t, got.IsActive)
		_, err = db.APIKeyGetByRaw(ctx, raw+"x")
		require.ErrorIs(t, err, persistence.ErrNotFound)
	})
}

func TestAgentMutateIsSerialised(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		u := newUser(t, db)
		a := &persistence.Agent{UserID: u.ID, Name: "a", Provider: "anthropic", Model: "m", Runtime: "claude",
			Skills: json.RawMessage("[]"), MCPServers: json.RawMessage("[]"), Metadata: json.RawMessage("{}")}
		require.NoError(t, db.AgentCreate(ctx, a))

		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := db.AgentMutate(ctx, u.ID, a.ID, func(cur *persistence.Agent) (persistence.Change, error) {
					if cur.Version != 1 {
						return persistence.NoChange, persistence.ErrConflict
					}
					cur.Name = fmt.Sprintf("n%d", i)
					return persistence.NewVersion, nil
				})
				if err == nil {
					wins.Add(1)
				} else {
					require.ErrorIs(t, err, persistence.ErrConflict)
				}
			}()
		}
		wg.Wait()
		require.EqualValues(t, 1, wins.Load())
		vs, err := db.AgentVersions(ctx, u.ID, a.ID)
		require.NoError(t, err)
		require.Len(t, vs, 2)
		require.Equal(t, 2, vs[0].Version)

		other := newUser(t, db)
		_, err = db.AgentGet(ctx, other.ID, a.ID)
		require.ErrorIs(t, err, persistence.ErrNotFound)
	})
}

func TestEnvironmentSecretsAreSealed(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		u := newUser(t, db)
		secret := "sk-live-" + persistence.NewUUID()
		e := &persistence.Environment{UserID: u.ID, Name: "e", Packages: json.RawMessage("{}"),
			EnvVars: map[string]string{"API_KEY": secret}, NetworkingType: "unrestricted",
			NetworkingConfig: json.RawMessage("{}")}
		require.NoError(t, db.EnvironmentCreate(ctx, e))

		var raw []string
		require.NoError(t, db.Bun().NewRaw("SELECT env_vars FROM environments WHERE id = ?", e.ID).Scan(ctx, &raw))
		require.Len(t, raw, 1)
		require.NotContains(t, raw[0], secret)
		require.NoError(t, db.Bun().NewRaw("SELECT env_vars FROM environment_versions WHERE environment_id = ?", e.ID).Scan(ctx, &raw))
		require.NotContains(t, raw[0], secret)

		got, err := db.EnvironmentGet(ctx, u.ID, e.ID)
		require.NoError(t, err)
		require.Equal(t, secret, got.EnvVars["API_KEY"])

		dup := &persistence.Environment{UserID: u.ID, Name: "e", Packages: json.RawMessage("{}"),
			NetworkingType: "unrestricted", NetworkingConfig: json.RawMessage("{}")}
		require.ErrorIs(t, db.EnvironmentCreate(ctx, dup), persistence.ErrNameTaken)

		require.NoError(t, db.EnvironmentDelete(ctx, u.ID, e.ID))
		_, err = db.EnvironmentGet(ctx, u.ID, e.ID)
		require.ErrorIs(t, err, persistence.ErrNotFound)
	})
}

func TestSessionQuotaAndLog(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		u := newUser(t, db)
		create := func() error {
			_, err := db.SessionCreate(ctx, &persistence.SessionCreateParams{
				Session: &persistence.Session{UserID: u.ID, Runtime: "claude", Backend: "sprites", BackendHandle: "aod-x"},
				Prompt:  "p", Timeout: 600, DefaultLimit: 5,
				SecretEnvVars: map[string]string{"TOKEN": "s3cr3t-value"},
				Resources:     []persistence.Resource{{ResourceType: "github_repository", URL: "https://github.com/o/r", MountPath: "/workspace/r", Token: "ghp_tok3n"}},
			})
			return err
		}
		var wg sync.WaitGroup
		var ok, limited atomic.Int32
		for range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := create()
				var qe *persistence.QuotaError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &qe):
					require.Equal(t, 5, qe.Limit)
					require.Equal(t, 5, qe.Active)
					limited.Add(1)
				default:
					require.NoError(t, err)
				}
			}()
		}
		wg.Wait()
		require.EqualValues(t, 5, ok.Load(), "the quota holds under concurrent creates")
		require.EqualValues(t, 7, limited.Load())

		sessions, err := db.SessionList(ctx, u.ID)
		require.NoError(t, err)
		require.Len(t, sessions, 5)
		s := sessions[0]
		require.Equal(t, 1, s.TurnCount)
		require.Equal(t, 1, s.CurrentTurn)
		env, err := db.SessionSecretEnvVars(ctx, s.ID)
		require.NoError(t, err)
		require.Equal(t, "s3cr3t-value", env["TOKEN"])
		res, err := db.SessionResources(ctx, s.ID)
		require.NoError(t, err)
		require.Equal(t, "ghp_tok3n", res[0].Token)
		for _, q := range []string{"SELECT COUNT(*) FROM session_secret_env_vars WHERE encrypted_env_vars LIKE '%s3cr3t%'",
			"SELECT COUNT(*) FROM session_resources WHERE encrypted_token LIKE '%tok3n%'"} {
			var n int
			require.NoError(t, db.Bun().NewRaw(q).Scan(ctx, &n))
			require.Zero(t, n, q)
		}

		// The log: ids strictly increase; updates land with the events.
		turn, err := db.TurnLatest(ctx, s.ID)
		require.NoError(t, err)
		var last int64
		for batch := range 5 {
			var evs []*persistence.Event
			for i := range 10 {
				evs = append(evs, &persistence.Event{SessionID: s.ID, Kind: persistence.KindOutput, Stream: "stdout", Data: fmt.Sprintf("%d-%d", batch, i)})
			}
			require.NoError(t, db.LogAppend(ctx, evs, persistence.SetTurn(turn.ID, map[string]any{"stdout_offset": int64(batch)})))
			for _, e := range evs {
				require.Greater(t, e.ID, last)
				last = e.ID
			}
		}
		got, err := db.EventsAfter(ctx, s.ID, 0, 1000)
		require.NoError(t, err)
		require.Len(t, got, 50)
		require.Equal(t, "0-0", got[0].Data)
		require.Equal(t, "4-9", got[49].Data)
		page, err := db.EventsAfter(ctx, s.ID, got[9].ID, 5)
		require.NoError(t, err)
		require.Equal(t, "1-0", page[0].Data)
		require.Len(t, page, 5)
		// Pages bounded in bytes: each row is 3 bytes; a row is included
		// while the data before it is below the budget.
		bpage, more, err := db.EventsPage(ctx, s.ID, got[9].ID, 500, 7)
		require.NoError(t, err)
		require.True(t, more)
		require.Equal(t, []string{"1-0", "1-1", "1-2"}, []string{bpage[0].Data, bpage[1].Data, bpage[2].Data})
		require.Len(t, bpage, 3)
		require.Equal(t, got[10].ID, bpage[0].ID)
		bpage, more, err = db.EventsPage(ctx, s.ID, got[9].ID, 4, 1<<20)
		require.NoError(t, err)
		require.True(t, more, "cut by the row limit")
		require.Len(t, bpage, 4)
		bpage, more, err = db.EventsPage(ctx, s.ID, 0, 500, 1<<20)
		require.NoError(t, err)
		require.False(t, more)
		require.Len(t, bpage, 50)
		require.Equal(t, got[49], bpage[49], "same rows as EventsAfter")
		bpage, more, err = db.EventsPage(ctx, s.ID, 0, 500, 1)
		require.NoError(t, err)
		require.True(t, more)
		require.Len(t, bpage, 1, "at least one row, however small the budget")
		turn, err = db.TurnLatest(ctx, s.ID)
		require.NoError(t, err)
		require.EqualValues(t, 4, turn.StdoutOffset)

		// terminated is never overwritten.
		require.NoError(t, db.LogAppend(ctx, nil, persistence.SetSession(s.ID, map[string]any{"status": "terminated"}, false)))
		require.NoError(t, db.LogAppend(ctx, nil, persistence.SetSession(s.ID, map[string]any{"status": "completed"}, true)))
		st, _, err := db.SessionStatus(ctx, s.ID)
		require.NoError(t, err)
		require.Equal(t, "terminated", st)

		_, err = db.SessionDelete(ctx, u.ID, sessions[1].ID)
		require.ErrorIs(t, err, persistence.ErrSessionActive, "a pending session cannot be deleted")
		_, err = db.SessionDelete(ctx, u.ID, s.ID)
		require.NoError(t, err)
		got, err = db.EventsAfter(ctx, s.ID, 0, 10)
		require.NoError(t, err)
		require.Empty(t, got, "delete cascades to the log")
	})
}
