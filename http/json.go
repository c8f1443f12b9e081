package http

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/gofiber/fiber/v2"
)

// writeJSON renders v without HTML escaping, like Django's JsonResponse.
func writeJSON(c *fiber.Ctx, status int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	c.Status(status)
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(bytes.TrimRight(buf.Bytes(), "\n"))
}

// decodeObject parses a request body that must be a JSON object. Numbers
// stay json.Number so integers keep their precision.
func decodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errInvalidJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errInvalidJSON
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errInvalidJSON
	}
	return m, nil
}
