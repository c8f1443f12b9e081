package local

import (
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/spritestest"
)

// harness runs the conformance suite against the local backend. The owner
// is the test process itself, so Restart drops the backend (without any
// cleanup, as SIGKILL would) and makes a new one over the same directory.
type harness struct {
	cfg Config

	mu sync.Mutex
	b  *Backend
}

func (h *harness) Backend() sprites.Backend {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.b
}

func (h *harness) Restart(t *testing.T) {
	b, err := New(h.cfg)
	require.NoError(t, err)
	h.mu.Lock()
	h.b = b
	h.mu.Unlock()
}

func (h *harness) DataDir() string { return h.cfg.Dir }

func TestConformance(t *testing.T) {
	t.Parallel()
	cfg := Config{
		Dir:     t.TempDir(),
		Network: os.Getenv("AOD_LOCAL_NETWORK"),
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	b, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, b.Check(t.Context()))
	spritestest.Conformance(t, &harness{cfg: cfg, b: b})
}
