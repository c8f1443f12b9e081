package http

import (
	"errors"
	"net"

	"github.com/gofiber/fiber/v2"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/persistence"
)

// devPublish is the benchmark-only hook of D19 (AOD_DEV_PUBLISH=1): the raw
// body becomes one stdout output event of the running turn, through the
// same writer and fan-out as exec output. Only loopback clients reach it.
func (s *Server) devPublish(c *fiber.Ctx, p *principal) error {
	sess, err := s.db.SessionGet(c.UserContext(), p.UserID, c.Params("id"))
	if err != nil {
		return s.sessionNotFound(err)
	}
	if sess.Status != "running" || s.deps.Sessions == nil {
		return errSessionNotRunning
	}
	id, err := s.deps.Sessions.Publish(c.UserContext(), sess.ID, string(c.Body()))
	if errors.Is(err, actors.ErrNotRunning) {
		return errSessionNotRunning
	}
	if persistence.IsForeignKeyViolation(err) {
		return errSessionNotFound // deleted while the output was being published
	}
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusCreated, map[string]any{"id": id})
}

// loopbackOnly hides a route from every client not on the loopback.
func loopbackOnly(c *fiber.Ctx) error {
	if ip := net.ParseIP(c.Context().RemoteIP().String()); ip == nil || !ip.IsLoopback() {
		return errNotFound
	}
	return c.Next()
}
