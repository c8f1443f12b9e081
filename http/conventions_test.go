package http_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	aodhttp "github.com/aodhq/aod/http"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

func TestAuthentication(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		key, u := e.user()
		inactive, k, err := e.db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID})
		require.NoError(t, err)
		_, err = e.db.APIKeyRevoke(ctx, k.KeyPrefix)
		require.NoError(t, err)
		past := time.Now().Add(-time.Minute)
		expired, _, err := e.db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, ExpiresAt: &past})
		require.NoError(t, err)
		future := time.Now().Add(time.Hour)
		fresh, _, err := e.db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, ExpiresAt: &future})
		require.NoError(t, err)

		tests := []struct {
			name   string
			header string
			status int
			detail string
		}{
			{"no header", "", 401, "Missing or invalid Authorization header"},
			{"basic", "Basic abc", 401, "Missing or invalid Authorization header"},
			{"lowercase bearer", "bearer " + key, 401, "Missing or invalid Authorization header"},
			{"unknown", "Bearer aod_nope", 401, "Invalid API key"},
			{"inactive", "Bearer " + inactive, 401, "API key is inactive"},
			{"expired", "Bearer " + expired, 401, "API key has expired"},
			{"valid", "Bearer " + key, 200, ""},
			{"valid unexpired", "Bearer " + fresh, 200, ""},
		}
		for _, tt := range tests {
			var headers []string
			if tt.header != "" {
				headers = []string{"Authorization", tt.header}
			}
			for _, path := range []string{"/agents", "/environments"} {
				r := e.do("GET", path, "", nil, headers...)
				require.Equal(t, tt.status, r.status, "%s %s: %s", tt.name, path, r.body)
				if tt.detail != "" {
					require.Equal(t, map[string]any{"detail": tt.detail}, r.json(t), tt.name)
				}
			}
		}
	})
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		id := persistence.NewUUID()
		// Method-dispatching views: auth first, then 405 JSON.
		for _, tt := range []struct{ method, path string }{
			{"PATCH", "/agents"},
			{"DELETE", "/agents/" + id},
			{"PUT", "/environments"},
			{"POST", "/environments/" + id},
			{"GET", "/environments/" + id + "/delete"},
		} {
			r := e.do(tt.method, tt.path, "", nil)
			require.Equal(t, 401, r.status, "%s %s unauthenticated", tt.method, tt.path)
			r = e.do(tt.method, tt.path, key, nil)
			require.Equal(t, 405, r.status, "%s %s", tt.method, tt.path)
			require.Equal(t, map[string]any{"detail": "Method not allowed"}, r.json(t))
		}
		// Decorated views: bare 405 before auth.
		for _, tt := range []struct{ method, path, allow string }{
			{"POST", "/health", "GET"},
			{"GET", "/agents/" + id + "/archive", "POST"},
			{"POST", "/agents/" + id + "/versions", "GET"},
			{"GET", "/environments/" + id + "/archive", "POST"},
			{"DELETE", "/environments/" + id + "/versions", "GET"},
		} {
			r := e.do(tt.method, tt.path, "", nil)
			require.Equal(t, 405, r.status, "%s %s", tt.method, tt.path)
			require.Empty(t, r.body)
			require.Equal(t, tt.allow, r.header.Get("Allow"))
		}
	})
}

func TestPathsAndBodies(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		e := newEnv(t, db, envOpts{maxBody: 2048})
		key, _ := e.user()
		notFound := map[string]any{"detail": "Not found"}
		for _, path := range []string{"/agents/", "/agents/not-a-uuid", "/agents/0B6F0D8E-3C1A-4B8E-9A51-2F1F3C5D7E90",
			"/environments/123/versions", "/v1/agents", "/nope", "/Agents"} {
			r := e.do("GET", path, key, nil)
			require.Equal(t, 404, r.status, path)
			require.Equal(t, notFound, r.json(t), path)
		}
		// Malformed UUIDs are 404 even without auth (router level).
		r := e.do("GET", "/agents/xyz", "", nil)
		require.Equal(t, 404, r.status)

		invalid := map[string]any{"detail": "Invalid JSON"}
		for _, b := range []string{"", "{", "[]", `"x"`, "3", "null", `{"a":1} {"b":2}`} {
			r := e.do("POST", "/agents", key, b)
			require.Equal(t, 400, r.status, "body %q", b)
			require.Equal(t, invalid, r.json(t))
		}
		r = e.do("POST", "/agents", key, `{"name":"`+strings.Repeat("x", 4096)+`"}`)
		require.Equal(t, 413, r.status)
		require.Equal(t, map[string]any{"detail": "Request body too large"}, r.json(t))

		r = e.do("GET", "/agents", key, nil)
		require.NotEmpty(t, r.header.Get("X-Request-Id"))
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
	})
}

func TestHealth(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		e := newEnv(t, db)
		r := e.do("GET", "/health", "", nil)
		require.Equal(t, 200, r.status)
		require.JSONEq(t, `{"status":"ok","checks":{"db":"ok","crypto":"ok"}}`, string(r.body))

		bad := newEnv(t, db, envOpts{checks: []aodhttp.Checker{{Name: "sandbox", Check: func(context.Context) error {
			return errors.New("bubblewrap is not installed")
		}}}})
		r = bad.do("GET", "/health", "", nil)
		require.Equal(t, http.StatusServiceUnavailable, r.status)
		require.JSONEq(t, `{"status":"degraded","checks":{"db":"ok","crypto":"ok","sandbox":"fail: bubblewrap is not installed"}}`, string(r.body))
	})
}
