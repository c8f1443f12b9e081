package persistence

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/uptrace/bun"
)

// ErrEnvironmentInUse is returned by EnvironmentDelete while sessions
// reference the environment.
var ErrEnvironmentInUse = errors.New("persistence: environment has sessions")

// ErrNameTaken is returned when an active environment of the same user
// already has the name.
var ErrNameTaken = errors.New("persistence: environment name taken")

// Environment is a versioned sandbox environment. EnvVars is sealed at rest.
type Environment struct {
	bun.BaseModel `bun:"table:environments"`

	ID               string            `bun:"id,pk"`
	UserID           int64             `bun:"user_id"`
	Name             string            `bun:"name"`
	Packages         json.RawMessage   `bun:"packages"`
	EnvVars          map[string]string `bun:"-"`
	SealedEnvVars    string            `bun:"env_vars"`
	SetupScript      string            `bun:"setup_script"`
	NetworkingType   string            `bun:"networking_type"`
	NetworkingConfig json.RawMessage   `bun:"networking_config"`
	Version          int               `bun:"version"`
	CreatedAt        time.Time         `bun:"created_at"`
	UpdatedAt        time.Time         `bun:"updated_at"`
	ArchivedAt       *time.Time        `bun:"archived_at"`
}

// EnvironmentVersion is a snapshot of an environment, env_vars included
// (sealed).
type EnvironmentVersion struct {
	bun.BaseModel `bun:"table:environment_versions"`

	ID               int64             `bun:"id,pk,autoincrement"`
	EnvironmentID    string            `bun:"environment_id"`
	Version          int               `bun:"version"`
	Name             string            `bun:"name"`
	Packages         json.RawMessage   `bun:"packages"`
	EnvVars          map[string]string `bun:"-"`
	SealedEnvVars    string            `bun:"env_vars"`
	SetupScript      string            `bun:"setup_script"`
	NetworkingType   string            `bun:"networking_type"`
	NetworkingConfig json.RawMessage   `bun:"networking_config"`
	CreatedAt        time.Time         `bun:"created_at"`
}

// sealMap seals a string map as compact JSON with sorted keys.
func (db *DB) sealMap(m map[string]string) (string, error) {
	if m == nil {
		m = map[string]string{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("persistence: encode secret map: %w", err)
	}
	return db.sealer.Seal(b)
}

func (db *DB) openMap(sealed string) (map[string]string, error) {
	pt, err := db.sealer.Open(sealed)
	if err != nil {
		return nil, fmt.Errorf("persistence: open secret map: %w", err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(pt, &m); err != nil {
		return nil, fmt.Errorf("persistence: decode secret map: %w", err)
	}
	return m, nil
}

func (db *DB) envSnapshot(e *Environment) *EnvironmentVersion {
	return &EnvironmentVersion{
		EnvironmentID: e.ID, Version: e.Version, Name: e.Name, Packages: e.Packages,
		SealedEnvVars: e.SealedEnvVars, SetupScript: e.SetupScript, NetworkingType: e.NetworkingType,
		NetworkingConfig: e.NetworkingConfig, CreatedAt: e.UpdatedAt,
	}
}

func envWriteErr(err error, what string) error {
	if isUniqueViolation(err) {
		return ErrNameTaken
	}
	return fmt.Errorf("persistence: %s: %w", what, err)
}

// EnvironmentCreate inserts an environment at version 1 plus its snapshot.
// An active environment with the same name gives ErrNameTaken.
func (db *DB) EnvironmentCreate(ctx context.Context, e *Environment) error {
	sealed, err := db.sealMap(e.EnvVars)
	if err != nil {
		return err
	}
	e.SealedEnvVars = sealed
	e.ID = newUUID()
	e.Version = 1
	e.CreatedAt = now()
	e.UpdatedAt = e.CreatedAt
	return db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(e).Exec(ctx); err != nil {
			return envWriteErr(err, "insert environment")
		}
		if _, err := tx.NewInsert().Model(db.envSnapshot(e)).Exec(ctx); err != nil {
			return fmt.Errorf("persistence: insert environment version: %w", err)
		}
		return nil
	})
}

func (db *DB) envGet(ctx context.Context, q bun.IDB, userID int64, id string, lock bool) (*Environment, error) {
	e, err := db.envGetSealed(ctx, q, userID, id, lock)
	if err != nil {
		return nil, err
	}
	if e.EnvVars, err = db.openMap(e.SealedEnvVars); err != nil {
		return nil, err
	}
	return e, nil
}

// envGetSealed reads an environment without opening its env vars.
func (db *DB) envGetSealed(ctx context.Context, q bun.IDB, userID int64, id string, lock bool) (*Environment, error) {
	e := new(Environment)
	sel := q.NewSelect().Model(e).Where("id = ?", id).Where("user_id = ?", userID)
	if lock && db.dialect == "postgres" {
		sel = sel.For("UPDATE")
	}
	err := sel.Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: get environment: %w", err)
	}
	return e, nil
}

// EnvironmentGet returns the caller's environment with its env vars opened.
func (db *DB) EnvironmentGet(ctx context.Context, userID int64, id string) (*Environment, error) {
	return db.envGet(ctx, db.bun, userID, id, false)
}

// EnvironmentLookup returns the caller's environment without decrypting its
// env vars (EnvVars stays nil): for rendering and existence checks.
func (db *DB) EnvironmentLookup(ctx context.Context, userID int64, id string) (*Environment, error) {
	return db.envGetSealed(ctx, db.bun, userID, id, false)
}

// EnvironmentList returns the caller's non-archived environments, newest
// first. EnvVars are not opened.
func (db *DB) EnvironmentList(ctx context.Context, userID int64) ([]Environment, error) {
	var out []Environment
	err := db.bun.NewSelect().Model(&out).Where("user_id = ?", userID).Where("archived_at IS NULL").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list environments: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// EnvironmentMutate locks the caller's environment, lets fn change it, and
// writes what fn reports (see Change). A rename onto an active name gives
// ErrNameTaken.
func (db *DB) EnvironmentMutate(ctx context.Context, userID int64, id string, fn func(e *Environment) (Change, error)) (*Environment, error) {
	var out *Environment
	err := db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		e, err := db.envGet(ctx, tx, userID, id, true)
		if err != nil {
			return err
		}
		change, err := fn(e)
		if err != nil {
			return err
		}
		if change == NoChange {
			out = e
			return nil
		}
		if change == NewVersion {
			e.Version++
		}
		if e.SealedEnvVars, err = db.sealMap(e.EnvVars); err != nil {
			return err
		}
		e.UpdatedAt = now()
		if _, err := tx.NewUpdate().Model(e).WherePK().Exec(ctx); err != nil {
			return envWriteErr(err, "update environment")
		}
		if change == NewVersion {
			if _, err := tx.NewInsert().Model(db.envSnapshot(e)).Exec(ctx); err != nil {
				return fmt.Errorf("persistence: insert environment version: %w", err)
			}
		}
		out = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// EnvironmentVersions returns the snapshots, highest version first, with
// their env vars opened.
func (db *DB) EnvironmentVersions(ctx context.Context, userID int64, id string) ([]EnvironmentVersion, error) {
	if _, err := db.EnvironmentGet(ctx, userID, id); err != nil {
		return nil, err
	}
	var out []EnvironmentVersion
	err := db.bun.NewSelect().Model(&out).Where("environment_id = ?", id).Order("version DESC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list environment versions: %w", err)
	}
	for i := range out {
		if out[i].EnvVars, err = db.openMap(out[i].SealedEnvVars); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// EnvironmentDelete deletes the caller's environment unless any session
// (terminal ones included) references it: then ErrEnvironmentInUse. Agents
// pointing at it are detached by the foreign key.
func (db *DB) EnvironmentDelete(ctx context.Context, userID int64, id string) error {
	return db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := db.envGetSealed(ctx, tx, userID, id, true); err != nil {
			return err
		}
		n, err := tx.NewSelect().Table("agent_sessions").Where("environment_id = ?", id).Count(ctx)
		if err != nil {
			return fmt.Errorf("persistence: count sessions: %w", err)
		}
		if n > 0 {
			return ErrEnvironmentInUse
		}
		if _, err := tx.NewDelete().Model((*Environment)(nil)).Where("id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("persistence: delete environment: %w", err)
		}
		return nil
	})
}
