package migrations

import (
	"io/fs"
	"regexp"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

var nameRE = regexp.MustCompile(`^(\d{1,14})_[0-9a-z_-]+\.tx\.(up|down)\.sql$`)

func versions(t *testing.T, d Dialect) []string {
	t.Helper()
	fsys, err := FS(d)
	require.NoError(t, err)
	entries, err := fs.ReadDir(fsys, ".")
	require.NoError(t, err)
	seen := map[string]map[string]bool{}
	for _, e := range entries {
		m := nameRE.FindStringSubmatch(e.Name())
		require.NotNil(t, m, "migration file name %q does not follow the convention", e.Name())
		if seen[m[1]] == nil {
			seen[m[1]] = map[string]bool{}
		}
		seen[m[1]][m[2]] = true
	}
	var out []string
	for v, dirs := range seen {
		require.True(t, dirs["up"] && dirs["down"], "version %s of %s needs both up and down", v, d)
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func TestDialectsHaveTheSameVersions(t *testing.T) {
	t.Parallel()
	pg := versions(t, Postgres)
	require.NotEmpty(t, pg)
	require.Equal(t, pg, versions(t, SQLite))
}

func TestUnknownDialect(t *testing.T) {
	t.Parallel()
	_, err := FS("mysql")
	require.Error(t, err)
}
