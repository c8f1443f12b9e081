package persistence

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// IsUnavailable reports an error that says the database cannot serve right
// now, rather than that the request or the data is wrong: the server is
// unreachable or went away (refused, reset, closed connection, connect
// failure), a deadline passed while waiting for it, Postgres is shutting
// down, starting or out of resources (class 08, 53, 57P01..57P03), or the
// SQLite file cannot be written (disk full, I/O error, busy past its
// timeout, cannot open). HTTP answers these with 503 instead of 500.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code
		return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "53") ||
			c == "57P01" || c == "57P02" || c == "57P03"
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.Timeout(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_CANTOPEN,
			sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	// pgx reports a connection that died under a query ("conn closed") and
	// a pool closed at shutdown ("closed pool") without a typed error.
	s := err.Error()
	return strings.Contains(s, "conn closed") || strings.Contains(s, "closed pool")
}

// IsForeignKeyViolation reports a write refused because a row it
// references is gone (Postgres 23503, SQLite SQLITE_CONSTRAINT_FOREIGNKEY):
// e.g. an environment deleted between a handler's check and its insert.
func IsForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23503"
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		return liteErr.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	}
	return false
}
