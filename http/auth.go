package http

import (
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/aodhq/aod/persistence"
)

// principal is the authenticated caller: the API key's user.
type principal struct {
	UserID int64
	KeyID  int64
}

var (
	errAuthMissing  = detail(fiber.StatusUnauthorized, "Missing or invalid Authorization header")
	errAuthInvalid  = detail(fiber.StatusUnauthorized, "Invalid API key")
	errAuthInactive = detail(fiber.StatusUnauthorized, "API key is inactive")
	errAuthExpired  = detail(fiber.StatusUnauthorized, "API key has expired")
)

// authenticate resolves the bearer key to its user.
func (s *Server) authenticate(c *fiber.Ctx) (*principal, error) {
	h := c.Get(fiber.HeaderAuthorization)
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return nil, errAuthMissing
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errAuthInvalid
	}
	k, err := s.db.APIKeyGetByRaw(c.UserContext(), raw)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, errAuthInvalid
	}
	if err != nil {
		return nil, err
	}
	if !k.IsActive {
		return nil, errAuthInactive
	}
	if k.ExpiresAt != nil && !k.ExpiresAt.After(time.Now()) {
		return nil, errAuthExpired
	}
	return &principal{UserID: k.UserID, KeyID: k.ID}, nil
}
