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

// Session statuses (aod-api.md §4).
const (
	StatusPending    = "pending"
	StatusRunning    = "running"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
	StatusTerminated = "terminated"
)

// Session is one agent session: a sandbox and its turns.
type Session struct {
	bun.BaseModel `bun:"table:agent_sessions"`

	ID               string     `bun:"id,pk"`
	UserID           int64      `bun:"user_id"`
	AgentID          *string    `bun:"agent_id"`
	EnvironmentID    *string    `bun:"environment_id"`
	Provider         string     `bun:"provider"`
	Runtime          string     `bun:"runtime"`
	Prompt           string     `bun:"prompt"`
	Backend          string     `bun:"backend"`
	BackendHandle    string     `bun:"backend_handle"`
	RuntimeSessionID string     `bun:"runtime_session_id"`
	Status           string     `bun:"status"`
	ExitCode         *int       `bun:"exit_code"`
	OwnerNode        string     `bun:"owner_node"`
	OwnerEpoch       int64      `bun:"owner_epoch"`
	LeaseUntil       *time.Time `bun:"lease_until"`
	ProvisionedAt    *time.Time `bun:"provisioned_at"`
	CreatedAt        time.Time  `bun:"created_at"`
	UpdatedAt        time.Time  `bun:"updated_at"`

	// Filled by list/get queries.
	TurnCount   int `bun:"-"`
	CurrentTurn int `bun:"-"`
}

// Active reports whether the session counts against the quota.
func (s *Session) Active() bool { return s.Status == StatusPending || s.Status == StatusRunning }

// Turn is one prompt and the agent run that answers it.
type Turn struct {
	bun.BaseModel `bun:"table:session_turns"`

	ID         int64  `bun:"id,pk,autoincrement"`
	SessionID  string `bun:"session_id"`
	TurnNumber int    `bun:"turn_number"`
	Prompt     string `bun:"prompt"`
	// SystemPrompt is the agent's system prompt as of the session's
	// creation, on turn 1 only: the CLI receives it before the prompt
	// (Stdin), the API shows Prompt alone.
	SystemPrompt   string     `bun:"system_prompt"`
	Mode           string     `bun:"mode"`
	TimeoutSeconds int        `bun:"timeout_seconds"`
	Status         string     `bun:"status"`
	ExitCode       *int       `bun:"exit_code"`
	ExecID         string     `bun:"exec_id"`
	StdoutOffset   int64      `bun:"stdout_offset"`
	StderrOffset   int64      `bun:"stderr_offset"`
	CreatedAt      time.Time  `bun:"created_at"`
	StartedAt      *time.Time `bun:"started_at"`
	EndedAt        *time.Time `bun:"ended_at"`
}

// Stdin is what the agent CLI reads for the turn: the prompt, after the
// system prompt and a blank line when there is one (aod-api.md §5).
func (t *Turn) Stdin() string {
	if t.SystemPrompt == "" {
		return t.Prompt
	}
	return t.SystemPrompt + "\n\n" + t.Prompt
}

// Resource is a GitHub repository cloned into the sandbox.
type Resource struct {
	bun.BaseModel `bun:"table:session_resources"`

	ID             int64   `bun:"id,pk,autoincrement"`
	SessionID      string  `bun:"session_id"`
	Position       int     `bun:"position"`
	ResourceType   string  `bun:"resource_type"`
	URL            string  `bun:"url"`
	MountPath      string  `bun:"mount_path"`
	EncryptedToken *string `bun:"encrypted_token"`
	// Token is the opened token (never rendered).
	Token string `bun:"-"`
}

type secretEnvRow struct {
	bun.BaseModel `bun:"table:session_secret_env_vars"`

	SessionID        string `bun:"session_id,pk"`
	EncryptedEnvVars string `bun:"encrypted_env_vars"`
}

type quotaRow struct {
	bun.BaseModel `bun:"table:user_quotas"`

	UserID                int64 `bun:"user_id,pk"`
	MaxConcurrentSessions *int  `bun:"max_concurrent_sessions"`
}

// QuotaError is returned by SessionCreate when the user has as many active
// sessions as allowed.
type QuotaError struct {
	Limit  int
	Active int
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("concurrent session limit reached (%d/%d)", e.Active, e.Limit)
}

// SessionCreateParams describe a new session and its first turn.
type SessionCreateParams struct {
	Session       *Session // ID, timestamps, status and turn are filled in
	Prompt        string   // turn 1's raw prompt, as the request sent it
	SystemPrompt  string   // the agent's system prompt, for the CLI only
	Timeout       int      // seconds
	Resources     []Resource
	SecretEnvVars map[string]string
	// DefaultLimit applies when the user has no quota override.
	DefaultLimit int
}

// SessionCreate checks the user's concurrent-session quota and inserts the
// session, turn 1, its resources and sealed secrets, all in one
// transaction that holds the user's quota row lock, so concurrent creates
// cannot exceed the limit.
func (db *DB) SessionCreate(ctx context.Context, p *SessionCreateParams) (*Turn, error) {
	s := p.Session
	s.ID = newUUID()
	s.RuntimeSessionID = newUUID()
	s.Status = StatusPending
	s.Prompt = p.Prompt
	s.CreatedAt = now()
	s.UpdatedAt = s.CreatedAt
	turn := &Turn{SessionID: s.ID, TurnNumber: 1, Prompt: p.Prompt, SystemPrompt: p.SystemPrompt, Mode: "run", TimeoutSeconds: p.Timeout,
		Status: StatusPending, CreatedAt: s.CreatedAt}
	var sealedEnv string
	if len(p.SecretEnvVars) > 0 {
		var err error
		if sealedEnv, err = db.sealMap(p.SecretEnvVars); err != nil {
			return nil, err
		}
	}
	for i := range p.Resources {
		r := &p.Resources[i]
		r.SessionID, r.Position = s.ID, i
		if r.Token != "" {
			sealed, err := db.sealer.Seal([]byte(r.Token))
			if err != nil {
				return nil, fmt.Errorf("persistence: seal token: %w", err)
			}
			r.EncryptedToken = &sealed
		}
	}
	err := db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := &quotaRow{UserID: s.UserID}
		if _, err := tx.NewInsert().Model(q).On("CONFLICT (user_id) DO NOTHING").Exec(ctx); err != nil {
			return fmt.Errorf("persistence: quota row: %w", err)
		}
		sel := tx.NewSelect().Model(q).WherePK()
		if db.dialect == "postgres" {
			sel = sel.For("UPDATE")
		}
		if err := sel.Scan(ctx); err != nil {
			return fmt.Errorf("persistence: lock quota row: %w", err)
		}
		limit := p.DefaultLimit
		if q.MaxConcurrentSessions != nil {
			limit = *q.MaxConcurrentSessions
		}
		active, err := tx.NewSelect().Model((*Session)(nil)).Where("user_id = ?", s.UserID).
			Where("status IN (?)", bun.In([]string{StatusPending, StatusRunning})).Count(ctx)
		if err != nil {
			return fmt.Errorf("persistence: count active sessions: %w", err)
		}
		if int(active) >= limit {
			return &QuotaError{Limit: limit, Active: int(active)}
		}
		if _, err := tx.NewInsert().Model(s).Exec(ctx); err != nil {
			return fmt.Errorf("persistence: insert session: %w", err)
		}
		if _, err := tx.NewInsert().Model(turn).Returning("id").Exec(ctx); err != nil {
			return fmt.Errorf("persistence: insert turn: %w", err)
		}
		if len(p.Resources) > 0 {
			if _, err := tx.NewInsert().Model(&p.Resources).Exec(ctx); err != nil {
				return fmt.Errorf("persistence: insert resources: %w", err)
			}
		}
		if sealedEnv != "" {
			if _, err := tx.NewInsert().Model(&secretEnvRow{SessionID: s.ID, EncryptedEnvVars: sealedEnv}).Exec(ctx); err != nil {
				return fmt.Errorf("persistence: insert secret env vars: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.TurnCount, s.CurrentTurn = 1, 1
	return turn, nil
}

// UserQuotaSet sets (or clears, with nil) a user's concurrent-session limit.
func (db *DB) UserQuotaSet(ctx context.Context, userID int64, limit *int) error {
	q := &quotaRow{UserID: userID, MaxConcurrentSessions: limit}
	_, err := db.bun.NewInsert().Model(q).On("CONFLICT (user_id) DO UPDATE").
		Set("max_concurrent_sessions = EXCLUDED.max_concurrent_sessions").Exec(ctx)
	if err != nil {
		return fmt.Errorf("persistence: set quota: %w", err)
	}
	return nil
}

func (db *DB) fillTurnCounts(ctx context.Context, q bun.IDB, sessions []Session) error {
	if len(sessions) == 0 {
		return nil
	}
	ids := make([]string, len(sessions))
	for i := range sessions {
		ids[i] = sessions[i].ID
	}
	var rows []struct {
		SessionID string `bun:"session_id"`
		N         int    `bun:"n"`
		Max       int    `bun:"max"`
	}
	err := q.NewSelect().Table("session_turns").
		ColumnExpr("session_id, COUNT(*) AS n, MAX(turn_number) AS max").
		Where("session_id IN (?)", bun.In(ids)).Group("session_id").Scan(ctx, &rows)
	if err != nil {
		return fmt.Errorf("persistence: count turns: %w", err)
	}
	byID := map[string]int{}
	for i := range sessions {
		byID[sessions[i].ID] = i
	}
	for _, r := range rows {
		s := &sessions[byID[r.SessionID]]
		s.TurnCount, s.CurrentTurn = r.N, r.Max
	}
	return nil
}

func (db *DB) sessionGet(ctx context.Context, q bun.IDB, userID int64, id string, lock bool) (*Session, error) {
	s := new(Session)
	sel := q.NewSelect().Model(s).Where("id = ?", id)
	if userID != 0 {
		sel = sel.Where("user_id = ?", userID)
	}
	if lock && db.dialect == "postgres" {
		sel = sel.For("UPDATE")
	}
	err := sel.Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: get session: %w", err)
	}
	one := []Session{*s}
	if err := db.fillTurnCounts(ctx, q, one); err != nil {
		return nil, err
	}
	return &one[0], nil
}

// SessionGet returns the caller's session with turn counts. userID 0 skips
// the tenant check (internal callers only).
func (db *DB) SessionGet(ctx context.Context, userID int64, id string) (*Session, error) {
	return db.sessionGet(ctx, db.bun, userID, id, false)
}

// SessionList returns all the caller's sessions, newest first.
func (db *DB) SessionList(ctx context.Context, userID int64) ([]Session, error) {
	var out []Session
	if err := db.bun.NewSelect().Model(&out).Where("user_id = ?", userID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("persistence: list sessions: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	if err := db.fillTurnCounts(ctx, db.bun, out); err != nil {
		return nil, err
	}
	return out, nil
}

// SessionsActive returns every pending or running session (restart
// recovery).
func (db *DB) SessionsActive(ctx context.Context) ([]Session, error) {
	var out []Session
	err := db.bun.NewSelect().Model(&out).Where("status IN (?)", bun.In([]string{StatusPending, StatusRunning})).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list active sessions: %w", err)
	}
	return out, nil
}

// SessionResourcesMany returns the resources of several sessions (tokens not
// opened), by session id, each in order.
func (db *DB) SessionResourcesMany(ctx context.Context, sessionIDs []string) (map[string][]Resource, error) {
	out := map[string][]Resource{}
	if len(sessionIDs) == 0 {
		return out, nil
	}
	var rows []Resource
	err := db.bun.NewSelect().Model(&rows).Where("session_id IN (?)", bun.In(sessionIDs)).Order("session_id", "position").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list resources: %w", err)
	}
	for _, r := range rows {
		out[r.SessionID] = append(out[r.SessionID], r)
	}
	return out, nil
}

// SessionResources returns the session's resources in order, tokens opened.
func (db *DB) SessionResources(ctx context.Context, sessionID string) ([]Resource, error) {
	var out []Resource
	if err := db.bun.NewSelect().Model(&out).Where("session_id = ?", sessionID).Order("position").Scan(ctx); err != nil {
		return nil, fmt.Errorf("persistence: list resources: %w", err)
	}
	for i := range out {
		if out[i].EncryptedToken != nil {
			pt, err := db.sealer.Open(*out[i].EncryptedToken)
			if err != nil {
				return nil, fmt.Errorf("persistence: open token: %w", err)
			}
			out[i].Token = string(pt)
		}
	}
	return out, nil
}

// SessionSecretEnvVars returns the session's opened secret env vars.
func (db *DB) SessionSecretEnvVars(ctx context.Context, sessionID string) (map[string]string, error) {
	row := new(secretEnvRow)
	err := db.bun.NewSelect().Model(row).Where("session_id = ?", sessionID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: get secret env vars: %w", err)
	}
	return db.openMap(row.EncryptedEnvVars)
}

// TurnList returns the caller's session's turns by number.
func (db *DB) TurnList(ctx context.Context, userID int64, sessionID string) ([]Turn, error) {
	if _, err := db.SessionGet(ctx, userID, sessionID); err != nil {
		return nil, err
	}
	return db.turns(ctx, db.bun, sessionID)
}

func (db *DB) turns(ctx context.Context, q bun.IDB, sessionID string) ([]Turn, error) {
	var out []Turn
	if err := q.NewSelect().Model(&out).Where("session_id = ?", sessionID).Order("turn_number").Scan(ctx); err != nil {
		return nil, fmt.Errorf("persistence: list turns: %w", err)
	}
	return out, nil
}

// TurnLatest returns the session's highest-numbered turn.
func (db *DB) TurnLatest(ctx context.Context, sessionID string) (*Turn, error) {
	t := new(Turn)
	err := db.bun.NewSelect().Model(t).Where("session_id = ?", sessionID).Order("turn_number DESC").Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: latest turn: %w", err)
	}
	return t, nil
}

// SessionMutate locks the caller's session and lets fn decide; fn returns
// whether to save the session. Errors from fn are returned unchanged.
func (db *DB) SessionMutate(ctx context.Context, userID int64, id string, fn func(tx bun.Tx, s *Session) (bool, error)) (*Session, error) {
	var out *Session
	err := db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := db.sessionGet(ctx, tx, userID, id, true)
		if err != nil {
			return err
		}
		save, err := fn(tx, s)
		if err != nil {
			return err
		}
		if save {
			s.UpdatedAt = now()
			if _, err := tx.NewUpdate().Model(s).WherePK().ExcludeColumn("owner_node", "owner_epoch", "lease_until").Exec(ctx); err != nil {
				return fmt.Errorf("persistence: update session: %w", err)
			}
		}
		out = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TurnInsert adds a turn (inside SessionMutate's transaction).
func TurnInsert(ctx context.Context, tx bun.Tx, t *Turn) error {
	t.CreatedAt = now()
	if _, err := tx.NewInsert().Model(t).Returning("id").Exec(ctx); err != nil {
		return fmt.Errorf("persistence: insert turn: %w", err)
	}
	return nil
}

// ErrSessionActive is returned by SessionDelete for a pending or running
// session.
var ErrSessionActive = errors.New("persistence: session is active")

// SessionDelete deletes the caller's finished session with its turns, logs,
// resources and secrets (cascade), under the session's row lock, so it
// cannot race a new turn. Its sandbox, if any, is recorded as destroy
// pending in the same transaction (see SandboxDestroy). It returns the
// deleted session; an active session gives ErrSessionActive.
func (db *DB) SessionDelete(ctx context.Context, userID int64, id string) (*Session, error) {
	var out *Session
	err := db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		s, err := db.sessionGet(ctx, tx, userID, id, true)
		if err != nil {
			return err
		}
		if s.Active() {
			return ErrSessionActive
		}
		if _, err := tx.NewDelete().Model((*Session)(nil)).Where("id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("persistence: delete session: %w", err)
		}
		// The sandbox outlives the row until the janitor confirms it gone.
		if err := SandboxDestroyAdd(ctx, tx, s.Backend, s.BackendHandle); err != nil {
			return err
		}
		out = s
		return nil
	})
	return out, err
}

var _ = json.Marshal
