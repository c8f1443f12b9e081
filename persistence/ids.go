package persistence

import (
	"regexp"

	"github.com/google/uuid"
)

// newUUID returns a lowercase random (v4) UUID string.
func newUUID() string { return uuid.NewString() }

// NewUUID returns a lowercase random (v4) UUID string.
func NewUUID() string { return newUUID() }

// uuidRE is Django's <uuid:...> path converter pattern.
var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidUUID reports whether s is a canonical lowercase UUID, as accepted in
// API paths.
func ValidUUID(s string) bool { return uuidRE.MatchString(s) }
