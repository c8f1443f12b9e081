package actors_test

import (
	"testing"

	"github.com/aodhq/aod/actors/storetest"
	"github.com/aodhq/aod/persistence/persistencetest"
)

func TestStorePostgres(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, persistencetest.Postgres)
}

func TestStoreSQLite(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, persistencetest.SQLite)
}
