package http

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/aodhq/aod/http/schema"
	"github.com/aodhq/aod/persistence"
)

// apiError is an error with the exact status and JSON body to answer.
type apiError struct {
	status int
	body   any
}

func (e *apiError) Error() string { return http.StatusText(e.status) }

// detail builds the common {"detail": "<message>"} error.
func detail(status int, msg string) *apiError {
	return &apiError{status: status, body: map[string]any{"detail": msg}}
}

var (
	errInvalidJSON      = detail(fiber.StatusBadRequest, "Invalid JSON")
	errNotFound         = detail(fiber.StatusNotFound, "Not found")
	errMethodNotAllowed = detail(fiber.StatusMethodNotAllowed, "Method not allowed")
	errTooLarge         = detail(fiber.StatusRequestEntityTooLarge, "Request body too large")
	errInternal         = detail(fiber.StatusInternalServerError, "Internal server error")
	// errUnavailable answers a request whose database work failed because
	// the database cannot serve (unreachable, past AOD_DB_TIMEOUT, disk
	// full): a retry later may succeed.
	errUnavailable = detail(fiber.StatusServiceUnavailable, "Service unavailable")
)

// bareMethodNotAllowed is Django's require_http_methods answer: 405 with an
// empty body and an Allow header, given before authentication.
type bareMethodNotAllowed struct{ allow string }

func (e *bareMethodNotAllowed) Error() string { return "method not allowed" }

// errorHandler renders every error returned by a handler or middleware.
// Unknown errors become a 500 that leaks nothing.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	var ae *apiError
	var bare *bareMethodNotAllowed
	var fe *fiber.Error
	if d, ok := schema.Detail422(err); ok {
		if items, isList := d.([]schema.ErrorDetail); isList {
			for i := range items {
				items[i].Input = redactSecrets(items[i].Input, locIsSecret(items[i].Loc))
			}
		}
		return writeJSON(c, fiber.StatusUnprocessableEntity, map[string]any{"detail": d})
	}
	switch {
	case errors.As(err, &ae):
		return writeJSON(c, ae.status, ae.body)
	case errors.As(err, &bare):
		c.Set(fiber.HeaderAllow, bare.allow)
		c.Set(fiber.HeaderContentType, "text/html; charset=utf-8")
		return c.Status(fiber.StatusMethodNotAllowed).Send(nil)
	case errors.As(err, &fe):
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			return writeJSON(c, fe.Code, errTooLarge.body)
		case fiber.StatusNotFound:
			return writeJSON(c, fe.Code, errNotFound.body)
		case fiber.StatusMethodNotAllowed:
			return writeJSON(c, fe.Code, errMethodNotAllowed.body)
		case fiber.StatusBadRequest:
			return writeJSON(c, fe.Code, map[string]any{"detail": "Bad request"})
		}
		if fe.Code < 500 {
			return writeJSON(c, fe.Code, map[string]any{"detail": http.StatusText(fe.Code)})
		}
	}
	if persistence.IsUnavailable(err) {
		s.log.LogAttrs(c.UserContext(), slog.LevelWarn, "request failed: database unavailable",
			slog.String("request_id", requestID(c)),
			slog.String("method", c.Method()),
			slog.String("route", c.Route().Path),
			slog.String("error", err.Error()))
		return writeJSON(c, fiber.StatusServiceUnavailable, errUnavailable.body)
	}
	s.log.LogAttrs(c.UserContext(), slog.LevelError, "request failed",
		slog.String("request_id", requestID(c)),
		slog.String("method", c.Method()),
		slog.String("route", c.Route().Path),
		slog.String("error", err.Error()))
	return writeJSON(c, fiber.StatusInternalServerError, errInternal.body)
}

// secretKeys are request fields whose values are never sent back, not even
// in the "input" echo of a 422 item.
var secretKeys = map[string]bool{"env_vars": true, "secret_env_vars": true, "authorization_token": true}

// redactSecretValue replaces a secret input value.
const redactSecretValue = "[redacted]"

// redactSecrets returns v with the values under secretKeys replaced;
// underSecret is true inside such a value (e.g. the env_vars map itself when
// a 422 item is located at one of its entries).
func redactSecrets(v any, underSecret bool) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			if underSecret || secretKeys[k] {
				out[k] = redactSecretValue
				if m, ok := val.(map[string]any); ok && secretKeys[k] {
					out[k] = redactSecrets(m, true)
				}
				continue
			}
			out[k] = redactSecrets(val, false)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = redactSecrets(val, underSecret)
		}
		return out
	}
	if underSecret {
		return redactSecretValue
	}
	return v
}

func locIsSecret(loc []any) bool {
	for _, part := range loc {
		if k, ok := part.(string); ok && secretKeys[k] {
			return true
		}
	}
	return false
}
