package persistence_test

import (
	"context"
	"encoding/json"
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
