package http_test

import (
	"os"
	"testing"

	"github.com/aodhq/aod/persistence/persistencetest"
)

func TestMain(m *testing.M) { os.Exit(persistencetest.WrapTestMain(m)) }
