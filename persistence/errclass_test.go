package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

// TestIsPermanentRealErrors: the errors each dialect really returns for a
// violated foreign key (the session was deleted) and a duplicate key are
// permanent, so the log writer stops instead of retrying them for a minute.
func TestIsPermanentRealErrors(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		err := db.LogAppend(ctx, []*persistence.Event{{SessionID: persistence.NewUUID(), Kind: persistence.KindOutput, Stream: "stdout", Data: "x"}})
		require.Error(t, err)
		require.True(t, persistence.IsPermanent(err), "foreign key: %v", err)
		require.True(t, persistence.IsPermanent(fmt.Errorf("wrapped: %w", err)))

		s := newSessionRow(t, db)
		err = db.LogAppend(ctx, []*persistence.Event{
			{ID: 1 << 40, SessionID: s, Kind: persistence.KindOutput, Stream: "stdout", Data: "a"},
			{ID: 1 << 40, SessionID: s, Kind: persistence.KindOutput, Stream: "stdout", Data: "b"},
		})
		require.Error(t, err)
		require.True(t, persistence.IsPermanent(err), "duplicate key: %v", err)
	})
}

// TestIsPermanentIgnoresMessageText: an error is classified by the
// driver's code, never by words in its message (the old substring check
// called any error mentioning "violates foreign key" permanent, e.g. a
// network error quoting a statement).
func TestIsPermanentIgnoresMessageText(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{
		"write tcp: connection reset while sending: ERROR: insert violates foreign key constraint (SQLSTATE 23503)",
		"FOREIGN KEY constraint failed",
		"SQLSTATE 23514",
	} {
		require.False(t, persistence.IsPermanent(errors.New(msg)), msg)
	}
	require.False(t, persistence.IsPermanent(context.DeadlineExceeded))
	require.False(t, persistence.IsPermanent(nil))
}

// newSessionRow creates a session of a new user and returns its id.
func newSessionRow(t *testing.T, db *persistence.DB) string {
	t.Helper()
	u := newUser(t, db)
	s := &persistence.Session{UserID: u.ID, Runtime: "claude", Backend: "sprites", BackendHandle: "aod-x"}
	_, err := db.SessionCreate(context.Background(), &persistence.SessionCreateParams{Session: s, Prompt: "p", Timeout: 600, DefaultLimit: 5})
	require.NoError(t, err)
	return s.ID
}
