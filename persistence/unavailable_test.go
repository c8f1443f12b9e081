package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

// TestIsUnavailable classifies connectivity failures (503) apart from
// errors about the request or the data (500 or a 4xx).
func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	// A real connect failure: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, connectErr := persistence.Open(context.Background(), persistence.Options{
		URL: "postgres://postgres@" + addr + "/x?sslmode=disable", Sealer: persistencetest.Sealer(t), ConnectTimeout: time.Second})
	require.Error(t, connectErr)

	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connect refused", connectErr, true},
		{"deadline", fmt.Errorf("get session: %w", context.DeadlineExceeded), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"disk full", &pgconn.PgError{Code: "53100"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"untranslatable NUL", &pgconn.PgError{Code: "22P05"}, false},
		{"not found", persistence.ErrNotFound, false},
		{"plain", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, persistence.IsUnavailable(tc.err), "%v", tc.err)
		})
	}
}

func TestIsForeignKeyViolation(t *testing.T) {
	t.Parallel()
	require.True(t, persistence.IsForeignKeyViolation(fmt.Errorf("insert agent: %w", &pgconn.PgError{Code: "23503"})))
	require.False(t, persistence.IsForeignKeyViolation(&pgconn.PgError{Code: "23505"}))
	require.False(t, persistence.IsForeignKeyViolation(errors.New("FOREIGN KEY constraint failed")), "typed errors only")
	require.False(t, persistence.IsForeignKeyViolation(nil))
}
