package persistence

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// User is an account. API keys act as their user.
type User struct {
	bun.BaseModel `bun:"table:users"`

	ID        int64     `bun:"id,pk,autoincrement"`
	Username  string    `bun:"username"`
	CreatedAt time.Time `bun:"created_at"`
}

// APIKey is a bearer key. Only the SHA-256 of the raw key is stored.
type APIKey struct {
	bun.BaseModel `bun:"table:api_keys"`

	ID        int64      `bun:"id,pk,autoincrement"`
	UserID    int64      `bun:"user_id"`
	KeyHash   string     `bun:"key_hash"`
	KeyPrefix string     `bun:"key_prefix"`
	Name      string     `bun:"name"`
	IsActive  bool       `bun:"is_active"`
	CreatedAt time.Time  `bun:"created_at"`
	ExpiresAt *time.Time `bun:"expires_at"`
}

// KeyPrefixLen is the number of leading characters of a raw key kept in
// clear to identify it ("aod_" plus 8).
const KeyPrefixLen = 12

// HashKey returns the stored form of a raw API key.
func HashKey(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

// NewRawKey returns a fresh raw key: "aod_" + 43 URL-safe characters.
func NewRawKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("persistence: generate key: %w", err)
	}
	return "aod_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// UserCreate inserts a user; an existing username gives ErrConflict.
func (db *DB) UserCreate(ctx context.Context, username string) (*User, error) {
	u := &User{Username: username, CreatedAt: now()}
	if _, err := db.bun.NewInsert().Model(u).Returning("id").Exec(ctx); err != nil {
		if isUniqueViolation(err) {
			return nil, fmt.Errorf("user %q already exists: %w", username, ErrConflict)
		}
		return nil, fmt.Errorf("persistence: create user: %w", err)
	}
	return u, nil
}

// UserGetByName looks a user up by username.
func (db *DB) UserGetByName(ctx context.Context, username string) (*User, error) {
	u := new(User)
	err := db.bun.NewSelect().Model(u).Where("username = ?", username).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("user %q: %w", username, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: get user: %w", err)
	}
	return u, nil
}

// UserCount returns the number of users.
func (db *DB) UserCount(ctx context.Context) (int, error) {
	n, err := db.bun.NewSelect().Model((*User)(nil)).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("persistence: count users: %w", err)
	}
	return int(n), nil
}

// APIKeyCreateParams describe a new key.
type APIKeyCreateParams struct {
	UserID    int64
	Name      string
	ExpiresAt *time.Time
}

// APIKeyCreate mints a key and returns the raw key, which is never stored.
func (db *DB) APIKeyCreate(ctx context.Context, p *APIKeyCreateParams) (string, *APIKey, error) {
	raw, err := NewRawKey()
	if err != nil {
		return "", nil, err
	}
	k := &APIKey{
		UserID:    p.UserID,
		KeyHash:   HashKey(raw),
		KeyPrefix: raw[:KeyPrefixLen],
		Name:      p.Name,
		IsActive:  true,
		CreatedAt: now(),
		ExpiresAt: p.ExpiresAt,
	}
	if _, err := db.bun.NewInsert().Model(k).Returning("id").Exec(ctx); err != nil {
		return "", nil, fmt.Errorf("persistence: create api key: %w", err)
	}
	return raw, k, nil
}

// APIKeyGetByRaw finds the key whose hash matches raw, whatever its state.
func (db *DB) APIKeyGetByRaw(ctx context.Context, raw string) (*APIKey, error) {
	k := new(APIKey)
	err := db.bun.NewSelect().Model(k).Where("key_hash = ?", HashKey(raw)).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: get api key: %w", err)
	}
	return k, nil
}

// APIKeyRevoke deactivates every key whose prefix is prefix and returns how
// many it changed.
func (db *DB) APIKeyRevoke(ctx context.Context, prefix string) (int64, error) {
	res, err := db.bun.NewUpdate().Model((*APIKey)(nil)).
		Set("is_active = ?", false).
		Where("key_prefix = ?", prefix).
		Where("is_active = ?", true).
		Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("persistence: revoke api key: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
