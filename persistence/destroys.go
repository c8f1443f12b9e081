package persistence

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// SandboxDestroy is a durable "destroy pending" record: a sandbox that the
// API has forgotten (its session terminated or deleted) but the backend has
// not yet confirmed gone. The janitor retries it until the backend does.
type SandboxDestroy struct {
	bun.BaseModel `bun:"table:sandbox_destroys"`

	Backend       string    `bun:"backend,pk"`
	Handle        string    `bun:"handle,pk"`
	CreatedAt     time.Time `bun:"created_at"`
	Attempts      int       `bun:"attempts"`
	NextAttemptAt time.Time `bun:"next_attempt_at"`
	LastError     string    `bun:"last_error"`
}

// SandboxDestroyAdd records that the sandbox must be destroyed, inside the
// caller's transaction (the one that forgets the handle) or on its own
// with db.Bun(). A record already pending is made due at once.
func SandboxDestroyAdd(ctx context.Context, q bun.IDB, backend, handle string) error {
	if handle == "" {
		return nil
	}
	t := now()
	r := &SandboxDestroy{Backend: backend, Handle: handle, CreatedAt: t, NextAttemptAt: t}
	if _, err := q.NewInsert().Model(r).On("CONFLICT (backend, handle) DO UPDATE").
		Set("next_attempt_at = EXCLUDED.next_attempt_at").Exec(ctx); err != nil {
		return fmt.Errorf("persistence: record sandbox destroy: %w", err)
	}
	return nil
}

// DestroySandbox is an Update for LogAppend that records the sandbox as
// destroy pending in the transaction that forgets its handle.
func DestroySandbox(backend, handle string) Update {
	return func(ctx context.Context, tx bun.Tx) error { return SandboxDestroyAdd(ctx, tx, backend, handle) }
}

// SandboxDestroyAdd records a pending destroy outside any transaction.
func (db *DB) SandboxDestroyAdd(ctx context.Context, backend, handle string) error {
	return SandboxDestroyAdd(ctx, db.bun, backend, handle)
}

// SandboxDestroysDue returns up to limit pending destroys of the backend
// whose next attempt is due at or before at, oldest due first.
func (db *DB) SandboxDestroysDue(ctx context.Context, backend string, at time.Time, limit int) ([]SandboxDestroy, error) {
	var out []SandboxDestroy
	err := db.bun.NewSelect().Model(&out).Where("backend = ?", backend).
		Where("next_attempt_at <= ?", at.UTC()).Order("next_attempt_at").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: list due sandbox destroys: %w", err)
	}
	return out, nil
}

// SandboxDestroysPending returns every pending destroy of the backend.
func (db *DB) SandboxDestroysPending(ctx context.Context, backend string) ([]SandboxDestroy, error) {
	var out []SandboxDestroy
	if err := db.bun.NewSelect().Model(&out).Where("backend = ?", backend).Order("next_attempt_at").Scan(ctx); err != nil {
		return nil, fmt.Errorf("persistence: list sandbox destroys: %w", err)
	}
	return out, nil
}

// SandboxDestroyDone removes the record once the backend confirmed the
// sandbox is gone.
func (db *DB) SandboxDestroyDone(ctx context.Context, backend, handle string) error {
	if _, err := db.bun.NewDelete().Model((*SandboxDestroy)(nil)).Where("backend = ?", backend).
		Where("handle = ?", handle).Exec(ctx); err != nil {
		return fmt.Errorf("persistence: finish sandbox destroy: %w", err)
	}
	return nil
}

// SandboxDestroyDefer makes the record due again at next without counting
// a failure (a confirmation that came too early to be final).
func (db *DB) SandboxDestroyDefer(ctx context.Context, backend, handle string, next time.Time) error {
	if _, err := db.bun.NewUpdate().Model((*SandboxDestroy)(nil)).
		Set("next_attempt_at = ?", next.UTC().Truncate(time.Microsecond)).
		Where("backend = ?", backend).Where("handle = ?", handle).Exec(ctx); err != nil {
		return fmt.Errorf("persistence: defer sandbox destroy: %w", err)
	}
	return nil
}

// SandboxDestroyFailed records a failed attempt and when to try again.
func (db *DB) SandboxDestroyFailed(ctx context.Context, backend, handle string, next time.Time, reason string) error {
	reason = strings.ToValidUTF8(strings.ReplaceAll(reason, "\x00", ""), "")
	if len(reason) > 1000 {
		reason = strings.ToValidUTF8(reason[:1000], "")
	}
	if _, err := db.bun.NewUpdate().Model((*SandboxDestroy)(nil)).
		Set("attempts = attempts + 1").Set("next_attempt_at = ?", next.UTC().Truncate(time.Microsecond)).
		Set("last_error = ?", reason).
		Where("backend = ?", backend).Where("handle = ?", handle).Exec(ctx); err != nil {
		return fmt.Errorf("persistence: record sandbox destroy failure: %w", err)
	}
	return nil
}
