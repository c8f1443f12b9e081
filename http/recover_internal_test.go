package http

import (
	"bytes"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence/persistencetest"
)

func TestPanicBecomes500WithoutLeaking(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := New(Deps{DB: persistencetest.SQLite(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// The server's own middleware and error handler, on a route that panics.
	app := fiber.New(fiber.Config{ErrorHandler: s.errorHandler})
	app.Use(s.recoverPanics)
	app.Get("/boom", func(c *fiber.Ctx) error { panic("secret internal state: sk-live-123") })
	resp, err := app.Test(httptest.NewRequest("GET", "/boom", nil), -1)
	require.NoError(t, err)
	require.Equal(t, 500, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	require.JSONEq(t, `{"detail":"Internal server error"}`, string(b))
	require.NotContains(t, string(b), "sk-live")
	require.Contains(t, logs.String(), "panic in handler", "the panic is logged for operators")
}

func TestHealthReportsDatabaseFailure(t *testing.T) {
	t.Parallel()
	db := persistencetest.SQLite(t)
	s := New(Deps{DB: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, db.Close())
	resp, err := s.App().Test(httptest.NewRequest("GET", "/health", nil), -1)
	require.NoError(t, err)
	require.Equal(t, 503, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(b), `"status":"degraded"`)
	require.Contains(t, string(b), `"db":"fail: `)
	require.Contains(t, string(b), `"crypto":"ok"`)
}
