package app

import (
	"os"
	"testing"

	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/sprites/runner"
)

func TestMain(m *testing.M) {
	runner.MaybeRunShim()
	os.Exit(persistencetest.WrapTestMain(m))
}
