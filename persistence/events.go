package persistence

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/aodhq/aod/migrations"
)

// Event kinds in the session log.
const (
	KindOutput = "output"
	KindStage  = "stage"
)

// Event is one row of a session's append-only log. Its ID is the SSE event
// id: strictly increasing within a session, never reused.
type Event struct {
	bun.BaseModel `bun:"table:agent_session_logs"`

	ID         int64     `bun:"id,pk,autoincrement"`
	SessionID  string    `bun:"session_id"`
	Turn       *int      `bun:"turn"`
	Kind       string    `bun:"kind"`
	Stream     string    `bun:"stream"`
	Data       string    `bun:"data"`
	Stage      string    `bun:"stage"`
	State      string    `bun:"state"`
	DurationMS *int64    `bun:"duration_ms"`
	CreatedAt  time.Time `bun:"created_at"`
}

// Update is a state change applied in the same transaction as a log
// append, after the events, so a reader that sees the new state also sees
// every event before it.
type Update func(ctx context.Context, tx bun.Tx) error

// LogAppend inserts events (filling in their IDs, in order) and applies
// updates, in one transaction. It is called only by a session's single log
// writer (D7).
func (db *DB) LogAppend(ctx context.Context, events []*Event, updates ...Update) error {
	ts := now()
	for _, e := range events {
		e.CreatedAt = ts
	}
	return db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if len(events) > 0 {
			if _, err := tx.NewInsert().Model(&events).Returning("id").Exec(ctx); err != nil {
				return fmt.Errorf("persistence: append events: %w", err)
			}
			if err := assignIDs(events); err != nil {
				return err
			}
		}
		for _, u := range updates {
			if err := u(ctx, tx); err != nil {
				return err
			}
		}
		return nil
	})
}

// assignIDs makes the ids of one multi-row insert follow the events' order.
// The rows are inserted in order, so their ids increase in that order; but
// RETURNING rows come back in an order neither dialect promises (SQLite's
// documentation calls it arbitrary) and the driver fills them in by
// position. So the returned ids are sorted back into insertion order; a
// batch whose ids are not distinct and positive fails the transaction
// rather than mislabel events.
func assignIDs(events []*Event) error {
	ids := make([]int64, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	if !slices.IsSorted(ids) {
		slices.Sort(ids)
	}
	for i, id := range ids {
		if id <= 0 || (i > 0 && id <= ids[i-1]) {
			return fmt.Errorf("persistence: append events: the database returned ids %v for %d rows", ids, len(events))
		}
		events[i].ID = id
	}
	return nil
}

// SetTurn updates columns of a turn.
func SetTurn(turnID int64, cols map[string]any) Update {
	return func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Table("session_turns").Where("id = ?", turnID)
		for c, v := range cols {
			q = q.Set("? = ?", bun.Ident(c), v)
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("persistence: update turn: %w", err)
		}
		return nil
	}
}

// SetSession updates columns of a session and its updated_at. With
// unlessTerminated a terminated session is left as it is: nothing
// overwrites "terminated".
func SetSession(sessionID string, cols map[string]any, unlessTerminated bool) Update {
	return func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Table("agent_sessions").Where("id = ?", sessionID).Set("updated_at = ?", now())
		if unlessTerminated {
			q = q.Where("status <> ?", StatusTerminated)
		}
		for c, v := range cols {
			q = q.Set("? = ?", bun.Ident(c), v)
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("persistence: update session: %w", err)
		}
		return nil
	}
}

// EventsAfter returns up to limit events of the session with id > after,
// in id order.
func (db *DB) EventsAfter(ctx context.Context, sessionID string, after int64, limit int) ([]Event, error) {
	var out []Event
	err := db.bun.NewSelect().Model(&out).Where("session_id = ?", sessionID).Where("id > ?", after).
		Order("id").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: read events: %w", err)
	}
	return out, nil
}

// SessionStatus returns a session's status and exit code (cheap poll for
// streams of finished sessions).
func (db *DB) SessionStatus(ctx context.Context, sessionID string) (string, *int, error) {
	var row struct {
		Status   string `bun:"status"`
		ExitCode *int   `bun:"exit_code"`
	}
	err := db.bun.NewSelect().Table("agent_sessions").Column("status", "exit_code").Where("id = ?", sessionID).Scan(ctx, &row)
	if err != nil {
		return "", nil, fmt.Errorf("persistence: session status: %w", err)
	}
	return row.Status, row.ExitCode, nil
}

// EventsLast returns the session's newest event (none when the log is
// empty).
func (db *DB) EventsLast(ctx context.Context, sessionID string) ([]Event, error) {
	var out []Event
	err := db.bun.NewSelect().Model(&out).Where("session_id = ?", sessionID).Order("id DESC").Limit(1).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("persistence: last event: %w", err)
	}
	return out, nil
}

// FailUnfinishedTurns marks the session's pending and running turns failed
// with a null exit code.
func FailUnfinishedTurns(sessionID string) Update {
	return func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewUpdate().Table("session_turns").
			Set("status = ?", StatusFailed).Set("exit_code = NULL").Set("ended_at = ?", now()).
			Where("session_id = ?", sessionID).Where("status IN (?)", bun.In([]string{StatusPending, StatusRunning})).
			Exec(ctx)
		if err != nil {
			return fmt.Errorf("persistence: fail turns: %w", err)
		}
		return nil
	}
}

// SetSessionIfActive updates columns of a session that is still pending or
// running (an internal failure never rewrites a finished session).
func SetSessionIfActive(sessionID string, cols map[string]any) Update {
	return SetSessionIf(sessionID, []string{StatusPending, StatusRunning}, cols, nil)
}

// SetTurnIf is a guarded status transition of a turn: it updates cols only
// while the turn's status is one of from. When matched is not nil it is set
// to whether the row was updated (the last attempt of the transaction
// wins, so read it only after the commit). A turn that terminate already
// failed is never flipped back to running or completed.
func SetTurnIf(turnID int64, from []string, cols map[string]any, matched *bool) Update {
	return func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Table("session_turns").Where("id = ?", turnID).Where("status IN (?)", bun.In(from))
		for c, v := range cols {
			q = q.Set("? = ?", bun.Ident(c), v)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return fmt.Errorf("persistence: update turn: %w", err)
		}
		return setMatched(res, matched, "turn")
	}
}

// SetSessionIf is a guarded status transition of a session: it updates
// cols (and updated_at) only while the session's status is one of from, so
// "terminated" (never in from) is never overwritten. matched is as for
// SetTurnIf.
func SetSessionIf(sessionID string, from []string, cols map[string]any, matched *bool) Update {
	return func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Table("agent_sessions").Where("id = ?", sessionID).Set("updated_at = ?", now()).
			Where("status IN (?)", bun.In(from))
		for c, v := range cols {
			q = q.Set("? = ?", bun.Ident(c), v)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return fmt.Errorf("persistence: update session: %w", err)
		}
		return setMatched(res, matched, "session")
	}
}

func setMatched(res sql.Result, matched *bool, what string) error {
	if matched == nil {
		return nil
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("persistence: update %s: rows affected: %w", what, err)
	}
	*matched = n > 0
	return nil
}

// OutputBytes returns the bytes of output text stored for the session, in
// all and for one of its turns (the output caps count them).
func (db *DB) OutputBytes(ctx context.Context, sessionID string, turn int) (session, turnBytes int64, err error) {
	size := "octet_length(data)"
	if db.dialect == migrations.SQLite {
		size = "length(CAST(data AS BLOB))"
	}
	var row struct {
		Session int64 `bun:"s"`
		Turn    int64 `bun:"t"`
	}
	err = db.bun.NewSelect().Table("agent_session_logs").
		ColumnExpr("COALESCE(SUM("+size+"), 0) AS s").
		ColumnExpr("COALESCE(SUM(CASE WHEN turn = ? THEN "+size+" ELSE 0 END), 0) AS t", turn).
		Where("session_id = ?", sessionID).Where("kind = ?", KindOutput).Scan(ctx, &row)
	if err != nil {
		return 0, 0, fmt.Errorf("persistence: output bytes: %w", err)
	}
	return row.Session, row.Turn, nil
}

// EventsPage returns the session's events with id > after, in id order: at
// most limit rows, and no more rows than it takes for their data to reach
// maxBytes (at least one row). more reports that the page was cut by
// either bound, so more rows may follow.
func (db *DB) EventsPage(ctx context.Context, sessionID string, after int64, limit int, maxBytes int64) (page []Event, more bool, err error) {
	length := "LENGTH(CAST(data AS BLOB))" // bytes, not characters
	if db.Dialect() == migrations.Postgres {
		length = "OCTET_LENGTH(data)"
	}
	// The running total is computed over the limited, id-ordered rows only
	// (the inner LIMIT bounds the scan); the outer filter keeps each row
	// that starts below the byte budget.
	q := "SELECT id, session_id, turn, kind, stream, data, stage, state, duration_ms, created_at FROM (" +
		"SELECT *, SUM(" + length + ") OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS running FROM (" +
		"SELECT * FROM agent_session_logs WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?) AS l) AS w " +
		"WHERE running - " + length + " < ? ORDER BY id"
	if err := db.bun.NewRaw(q, sessionID, after, limit, maxBytes).Scan(ctx, &page); err != nil {
		return nil, false, fmt.Errorf("persistence: read events: %w", err)
	}
	if len(page) >= limit {
		return page, true, nil
	}
	var n int64
	for i := range page {
		n += int64(len(page[i].Data))
	}
	return page, n >= maxBytes, nil
}
