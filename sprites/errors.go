package sprites

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Match them with [errors.Is]; an *[Error] matches the
// first three by its HTTP status.
var (
	// ErrNotFound means the sandbox, file or exec does not exist (HTTP 404).
	ErrNotFound = errors.New("sprites: not found")
	// ErrRateLimited means the service refused the request for now (HTTP
	// 429); the *Error's RetryAfter says when to try again.
	ErrRateLimited = errors.New("sprites: rate limited")
	// ErrUnauthorized means the token is missing or wrong (HTTP 401).
	ErrUnauthorized = errors.New("sprites: unauthorized")
	// ErrTransportLost means the exec stream was lost and could not be
	// re-established. The command may still be running: re-attach later with
	// Attach and the Exec's Offsets.
	ErrTransportLost = errors.New("sprites: exec transport lost")
)

// maxErrorBody caps how much of an error response body is kept.
const maxErrorBody = 64 << 10

// Error is an error answer from the Sprites API (or from a sandbox backend
// that mimics it).
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the machine-readable code, e.g. "sprite_creation_rate_limited"
	// or, for filesystem errors, "ENOENT".
	Code string
	// Message is the human-readable message (the raw body when it was not
	// JSON).
	Message string
	// Path is the file path of a filesystem error, if any.
	Path string
	// RetryAfter is how long the server asked us to wait (Retry-After header
	// or retry_after_seconds), zero when not given.
	RetryAfter time.Duration
	// Op describes the request, e.g. "POST /v1/sprites".
	Op string
	// Body is the raw response body (capped).
	Body []byte
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sprites: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Path != "" {
		b.WriteString(" (path ")
		b.WriteString(e.Path)
		b.WriteString(")")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Is matches the sentinels by status: 404 is ErrNotFound, 429 is
// ErrRateLimited and 401 is ErrUnauthorized.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	}
	return false
}

// Temporary reports whether retrying the same request may succeed (429 and
// 5xx).
func (e *Error) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// errorBody is the union of the JSON error shapes the API returns.
type errorBody struct {
	Error             json.RawMessage `json:"error"`
	Message           string          `json:"message"`
	Code              json.RawMessage `json:"code"`
	Path              string          `json:"path"`
	RetryAfterSeconds *float64        `json:"retry_after_seconds"`
}

// parseErrorBody builds an *Error from an HTTP error answer. It is lenient:
// a JSON body may be {"error","message","retry_after_seconds",...} or the
// filesystem shape {"error","code","path"}; anything else becomes the
// message as raw text. A Retry-After header (seconds or an HTTP date) wins
// over the body's retry_after_seconds. header may be nil.
func parseErrorBody(status int, header http.Header, body []byte) *Error {
	if len(body) > maxErrorBody {
		body = body[:maxErrorBody]
	}
	e := &Error{Status: status, Body: body}
	trimmed := strings.TrimSpace(string(body))
	var eb errorBody
	if strings.HasPrefix(trimmed, "{") && json.Unmarshal([]byte(trimmed), &eb) == nil {
		errStr := rawString(eb.Error)
		codeStr := rawString(eb.Code)
		switch {
		case codeStr != "":
			// fs shape: error is the message, code is the errno-like code.
			e.Code = codeStr
			e.Message = firstNonEmpty(eb.Message, errStr)
		case eb.Message != "":
			e.Code = errStr
			e.Message = eb.Message
		default:
			// Only "error": it is a code if it looks like one, else a message.
			if isCodeLike(errStr) {
				e.Code = errStr
			} else {
				e.Message = errStr
			}
		}
		e.Path = eb.Path
		if eb.RetryAfterSeconds != nil {
			e.RetryAfter = secondsToDuration(*eb.RetryAfterSeconds)
		}
	} else {
		e.Message = sanitizeText(trimmed)
	}
	if e.Message == "" && e.Code == "" {
		e.Message = http.StatusText(status)
	}
	if header != nil {
		if d, ok := parseRetryAfter(header.Get("Retry-After"), time.Now()); ok {
			e.RetryAfter = d
		}
	}
	return e
}

// rawString returns a JSON value as a string: strings unquoted, numbers and
// other scalars as written, null and objects as "".
func rawString(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	t := strings.TrimSpace(string(raw))
	if t == "null" || strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		return ""
	}
	return t
}

// isCodeLike reports whether s looks like a machine code
// ("sprite_creation_rate_limited", "ENOENT").
func isCodeLike(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// sanitizeText keeps a raw body printable-ish and short.
func sanitizeText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	const maxLen = 2048
	if len(s) > maxLen {
		s = s[:maxLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}

// maxRetryAfter bounds any server-supplied delay.
const maxRetryAfter = 24 * time.Hour

func secondsToDuration(sec float64) time.Duration {
	if sec != sec || sec <= 0 { // NaN or non-positive
		return 0
	}
	if sec >= maxRetryAfter.Seconds() {
		return maxRetryAfter
	}
	return time.Duration(sec * float64(time.Second))
}

// parseRetryAfter parses a Retry-After header: delay-seconds or an HTTP
// date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 || n != n {
			return 0, false
		}
		return secondsToDuration(n), true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return min(d, maxRetryAfter), true
	}
	return 0, false
}
