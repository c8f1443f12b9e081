package http

import (
	"context"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"
)

// health answers GET /health: {"status":"ok","checks":{"db":"ok",...}}, or
// 503 "degraded" with "fail: <reason>" for each failing check.
func (s *Server) health(c *fiber.Ctx) error {
	if c.Method() != fiber.MethodGet {
		return &bareMethodNotAllowed{allow: fiber.MethodGet}
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 5*time.Second)
	defer cancel()
	checks := append([]Checker{
		{Name: "db", Check: s.db.Ping},
		{Name: "crypto", Check: func(context.Context) error { return s.db.Sealer().Check() }},
	}, s.deps.Checks...)
	results := make(map[string]string, len(checks)) // encoding/json sorts the keys
	status, code := "ok", fiber.StatusOK
	for _, ch := range checks {
		if err := ch.Check(ctx); err != nil {
			results[ch.Name] = fmt.Sprintf("fail: %v", err)
			status, code = "degraded", fiber.StatusServiceUnavailable
			continue
		}
		results[ch.Name] = "ok"
	}
	return writeJSON(c, code, struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}{status, results})
}
