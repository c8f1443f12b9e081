// Package migrations embeds aod's SQL schema migrations, one directory per
// database dialect. Both directories hold the same versions; a version that
// exists in one dialect only is a bug caught by the tests.
//
// File names follow bun's migrate convention: NNNNNNNNNNNNNN_name.tx.up.sql
// and .tx.down.sql (run inside a transaction), statements separated by
// "--bun:split" lines.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Dialect names a supported database.
type Dialect string

// Supported dialects.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// FS returns the migration files of one dialect.
func FS(d Dialect) (fs.FS, error) {
	switch d {
	case Postgres, SQLite:
		return fs.Sub(files, string(d))
	}
	return nil, fmt.Errorf("migrations: unknown dialect %q", d)
}
