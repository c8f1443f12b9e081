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

// Agent is a versioned agent template.
type Agent struct {
	bun.BaseModel `bun:"table:agents"`

	ID            string          `bun:"id,pk"`
	UserID        int64           `bun:"user_id"`
	Name          string          `bun:"name"`
	Description   string          `bun:"description"`
	System        string          `bun:"system"`
	Provider      string          `bun:"provider"`
	Model         string          `bun:"model"`
	Runtime       string          `bun:"runtime"`
	EnvironmentID *string         `bun:"environment_id"`
	Skills        json.RawMessage `bun:"skills"`
	MCPServers    json.RawMessage `bun:"mcp_servers"`
	Metadata      json.RawMessage `bun:"metadata"`
	Version       int             `bun:"version"`
	CreatedAt     time.Time       `bun:"created_at"`
	UpdatedAt     time.Time       `bun:"updated_at"`
	ArchivedAt    *time.Time      `bun:"archived_at"`
}

// AgentVersion is a snapshot of an agent at one version.
type AgentVersion struct {
	bun.BaseModel `bun:"table:agent_versions"`

	ID            int64           `bun:"id,pk,autoincrement"`
	AgentID       string          `bun:"agent_id"`
	Version       int             `bun:"version"`
	Name          string          `bun:"name"`
	Description   string          `bun:"description"`
	System        string          `bun:"system"`
	Provider      string          `bun:"provider"`
	Model         string          `bun:"model"`
	Runtime       string          `bun:"runtime"`
	EnvironmentID *string         `bun:"environment_id"`
	Skills        json.RawMessage `bun:"skills"`
	MCPServers    json.RawMessage `bun:"mcp_servers"`
	Metadata      json.RawMessage `bun:"metadata"`
	CreatedAt     time.Time       `bun:"created_at"`
}

func agentSnapshot(a *Agent) *AgentVersion {
	return &AgentVersion{
		AgentID: a.ID, Version: a.Version, Name: a.Name, Description: a.Description, System: a.System,
		Provider: a.Provider, Model: a.Model, Runtime: a.Runtime, EnvironmentID: a.EnvironmentID,
		Skills: a.Skills, MCPServers: a.MCPServers, Metadata: a.Metadata, CreatedAt: a.UpdatedAt,
	}
}

// Change says what a mutation callback did to a row.
type Change int

// Kinds of change.
const (
	// NoChange leaves the row as it was.
	NoChange Change = iota
	// Save writes the row without a new version (archive).
	Save
	// NewVersion bumps the version, writes the row and a snapshot.
	NewVersion
)

// AgentCreate inserts an agent at version 1 with its version-1 snapshot.
// ID, Version and timestamps are filled in.
func (db *DB) AgentCreate(ctx context.Context, a *Agent) error {
	a.ID = newUUID()
	a.Version = 1
	a.CreatedAt = now()
	a.UpdatedAt = a.CreatedAt
	return db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(a).Exec(ctx); err != nil {
			return fmt.Errorf("persistence: insert agent: %w", err)
		}
		if _, err := tx.NewInsert().Model(agentSnapshot(a)).Exec(ctx); err != nil {
			return fmt.Errorf("persistence: insert agent version: %w", err)
		}
		return nil
	})
}

// AgentGet returns the caller's agent, archived or not.
func (db *DB) AgentGet(ctx context.Context, userID int64, id string) (*Agent, error) {
	return agentGet(ctx, db.bun, userID, id, false, db.dialect == "postgres")
}

func agentGet(ctx context.Context, q bun.IDB, userID int64, id string, lock, canLock bool) (*Agent, error) {
	a := new(Agent)
	sel := q.NewSelect().Model(a).Where("id = ?", id).Where("user_id = ?", userID)
	if lock && canLock {
		sel = sel.For("UPDATE")
	}
	err := sel.Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: get agent: %w", err)
	}
	return a, nil
}

// AgentList returns the caller's non-archived agents, newest first.
func (db *DB) AgentList(ctx context.Context, userID int64) ([]Agent, error) {
	var out []Agent
	err := db.bun.NewSelect().Model(&out).Where("user_id = ?", userID).Where("archived_at IS NULL").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list agents: %w", err)
	}
	// Sorted here rather than in SQL: SQLite stores timestamps as text whose
	// fractional part has no fixed width.
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// AgentMutate locks the caller's agent, lets fn change it, and writes what fn
// reports: nothing, the row, or the row at version+1 plus a snapshot. Errors
// from fn abort the transaction and are returned unchanged.
func (db *DB) AgentMutate(ctx context.Context, userID int64, id string, fn func(a *Agent) (Change, error)) (*Agent, error) {
	var out *Agent
	err := db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		a, err := agentGet(ctx, tx, userID, id, true, db.dialect == "postgres")
		if err != nil {
			return err
		}
		change, err := fn(a)
		if err != nil {
			return err
		}
		switch change {
		case NoChange:
			out = a
			return nil
		case NewVersion:
			a.Version++
		}
		a.UpdatedAt = now()
		if _, err := tx.NewUpdate().Model(a).WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("persistence: update agent: %w", err)
		}
		if change == NewVersion {
			if _, err := tx.NewInsert().Model(agentSnapshot(a)).Exec(ctx); err != nil {
				return fmt.Errorf("persistence: insert agent version: %w", err)
			}
		}
		out = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AgentVersions returns the caller's agent's snapshots, highest version first.
func (db *DB) AgentVersions(ctx context.Context, userID int64, id string) ([]AgentVersion, error) {
	if _, err := db.AgentGet(ctx, userID, id); err != nil {
		return nil, err
	}
	var out []AgentVersion
	err := db.bun.NewSelect().Model(&out).Where("agent_id = ?", id).Order("version DESC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list agent versions: %w", err)
	}
	return out, nil
}
