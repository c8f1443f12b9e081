package http_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
)

func TestEnvironmentLifecycle(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		r := e.do("POST", "/environments", key, map[string]any{
			"name": "build", "packages": map[string]any{"apt": []any{"jq"}, "npm": []any{"typescript"}},
			"env_vars": map[string]any{"DEBUG": "1"}, "setup_script": "echo hi",
			"networking": map[string]any{"type": "limited", "allowed_hosts": []any{"github.com"}},
		})
		require.Equal(t, 201, r.status, string(r.body))
		env := r.json(t)
		id := env["id"].(string)
		for k, v := range map[string]any{
			"type": "environment", "name": "build", "setup_script": "echo hi", "version": float64(1), "archived_at": nil,
			"packages":   map[string]any{"apt": []any{"jq"}, "npm": []any{"typescript"}},
			"networking": map[string]any{"type": "limited", "allowed_hosts": []any{"github.com"}},
		} {
			require.Equal(t, v, env[k], k)
		}
		require.NotContains(t, env, "env_vars")
		require.Len(t, env, 10)
		requireKeyOrder(t, string(r.body), "id", "type", "name", "packages", "setup_script", "networking", "version",
			"created_at", "updated_at", "archived_at")

		// Defaults.
		r = e.do("POST", "/environments", key, map[string]any{"name": "plain"})
		require.Equal(t, 201, r.status)
		plain := r.json(t)
		require.Equal(t, map[string]any{"type": "unrestricted"}, plain["networking"])
		require.Equal(t, map[string]any{}, plain["packages"])
		require.Nil(t, plain["setup_script"])
		// limited without hosts renders only the type.
		r = e.do("POST", "/environments", key, map[string]any{"name": "closed", "networking": map[string]any{"type": "limited"}})
		require.Equal(t, map[string]any{"type": "limited"}, r.json(t)["networking"])

		// Unique active name; archived names are reusable.
		r = e.do("POST", "/environments", key, map[string]any{"name": "build"})
		require.Equal(t, 409, r.status)
		require.Equal(t, "An active environment named 'build' already exists", r.json(t)["detail"])
		r = e.do("PUT", "/environments/"+plain["id"].(string), key, map[string]any{"version": 1, "name": "build"})
		require.Equal(t, 409, r.status)
		require.Equal(t, "An active environment named 'build' already exists", r.json(t)["detail"])

		// PUT: mismatch, env_vars replace (a change), no-op.
		r = e.do("PUT", "/environments/"+id, key, map[string]any{"version": 3})
		require.Equal(t, 409, r.status)
		require.Equal(t, "Version mismatch: expected 1, got 3", r.json(t)["detail"])
		r = e.do("PUT", "/environments/"+id, key, map[string]any{"version": 1, "env_vars": map[string]any{"OTHER": "2"}})
		require.Equal(t, 200, r.status)
		require.Equal(t, float64(2), r.json(t)["version"])
		require.NotContains(t, r.json(t), "env_vars")
		got, err := e.db.EnvironmentGet(context.Background(), mustUserID(t, e, key), id)
		require.NoError(t, err)
		require.Equal(t, map[string]string{"OTHER": "2"}, got.EnvVars, "env_vars replaces the whole map")
		r = e.do("PUT", "/environments/"+id, key, map[string]any{"version": 2, "name": "build", "setup_script": "echo hi",
			"networking": map[string]any{"type": "limited", "allowed_hosts": []any{"github.com"}}})
		require.Equal(t, float64(2), r.json(t)["version"], "no-op PUT keeps the version")
		r = e.do("PUT", "/environments/"+id, key, map[string]any{"version": 2, "networking": map[string]any{"type": "unrestricted"}})
		require.Equal(t, float64(3), r.json(t)["version"])
		require.Equal(t, map[string]any{"type": "unrestricted"}, r.json(t)["networking"])

		r = e.do("GET", "/environments/"+id+"/versions", key, nil)
		vs := r.json(t)["data"].([]any)
		require.Len(t, vs, 3)
		require.Equal(t, float64(3), vs[0].(map[string]any)["version"])
		require.NotContains(t, vs[0], "env_vars")
		require.NotContains(t, vs[0], "updated_at")

		list := e.do("GET", "/environments", key, nil).json(t)["data"].([]any)
		require.Len(t, list, 3)
		require.Equal(t, "closed", list[0].(map[string]any)["name"])

		// Archive twice, update archived, reuse the name.
		require.Equal(t, 200, e.do("POST", "/environments/"+id+"/archive", key, nil).status)
		r = e.do("POST", "/environments/"+id+"/archive", key, nil)
		require.Equal(t, 409, r.status)
		require.Equal(t, "Environment is already archived", r.json(t)["detail"])
		r = e.do("PUT", "/environments/"+id, key, map[string]any{"version": 3, "name": "z"})
		require.Equal(t, "Cannot update an archived environment", r.json(t)["detail"])
		require.Equal(t, 201, e.do("POST", "/environments", key, map[string]any{"name": "build"}).status)

		// Delete: refused while any session references it.
		insertSession(t, e.db, mustUserID(t, e, key), plain["id"].(string))
		r = e.do("DELETE", "/environments/"+plain["id"].(string)+"/delete", key, nil)
		require.Equal(t, 409, r.status)
		require.Equal(t, "Cannot delete environment with existing sessions", r.json(t)["detail"])
		r = e.do("DELETE", "/environments/"+id+"/delete", key, nil)
		require.Equal(t, 200, r.status)
		require.Equal(t, map[string]any{"detail": "Environment deleted"}, r.json(t))
		r = e.do("GET", "/environments/"+id, key, nil)
		require.Equal(t, 404, r.status)
		require.Equal(t, "Environment not found", r.json(t)["detail"])
	})
}

func TestEnvironmentValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body map[string]any
		msg  string
		loc  []any
	}{
		{"missing name", map[string]any{}, "Field required", []any{"name"}},
		{"name too long", map[string]any{"name": strings.Repeat("n", 201)}, "String should have at most 200 characters", []any{"name"}},
		{"bad manager", map[string]any{"name": "x", "packages": map[string]any{"brew": []any{"jq"}}},
			"Value error, Unknown package manager: brew. Must be one of: ['apt', 'cargo', 'gem', 'go', 'npm', 'pip']", []any{"packages"}},
		{"bad env key", map[string]any{"name": "x", "env_vars": map[string]any{"BAD-KEY": "v"}},
			"Value error, Invalid env_var key 'BAD-KEY': must match [A-Za-z_][A-Za-z0-9_]*", []any{"env_vars"}},
		{"bad networking", map[string]any{"name": "x", "networking": map[string]any{"type": "open"}},
			"Value error, networking.type must be 'unrestricted' or 'limited'", []any{"networking"}},
	}
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		for _, tt := range tests {
			r := e.do("POST", "/environments", key, tt.body)
			require.Equal(t, 422, r.status, "%s: %s", tt.name, r.body)
			items := errItems(t, r)
			require.Len(t, items, 1, "%s: %s", tt.name, r.body)
			require.Equal(t, tt.msg, items[0].Msg, tt.name)
			require.Equal(t, tt.loc, items[0].Loc, tt.name)
		}
		// Non-string package names and env values are schema errors.
		for _, b := range []map[string]any{
			{"name": "x", "packages": map[string]any{"apt": []any{1}}},
			{"name": "x", "env_vars": map[string]any{"K": 1}},
			{"name": "x", "networking": map[string]any{"type": "limited", "allowed_hosts": "github.com"}},
		} {
			r := e.do("POST", "/environments", key, b)
			require.Equal(t, 422, r.status, "%v: %s", b, r.body)
		}
	})
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		keyA, _ := e.user()
		keyB, _ := e.user()
		env := e.do("POST", "/environments", keyA, map[string]any{"name": "mine"}).json(t)["id"].(string)
		agent := e.do("POST", "/agents", keyA, with(validAgent(), "environment_id", env)).json(t)["id"].(string)

		tests := []struct {
			method, path string
			body         any
			detail       string
		}{
			{"GET", "/agents/" + agent, nil, "Agent not found"},
			{"PUT", "/agents/" + agent, map[string]any{"version": 1, "name": "stolen"}, "Agent not found"},
			{"POST", "/agents/" + agent + "/archive", nil, "Agent not found"},
			{"GET", "/agents/" + agent + "/versions", nil, "Agent not found"},
			{"GET", "/environments/" + env, nil, "Environment not found"},
			{"PUT", "/environments/" + env, map[string]any{"version": 1, "name": "stolen"}, "Environment not found"},
			{"POST", "/environments/" + env + "/archive", nil, "Environment not found"},
			{"GET", "/environments/" + env + "/versions", nil, "Environment not found"},
			{"DELETE", "/environments/" + env + "/delete", nil, "Environment not found"},
			{"POST", "/agents", with(validAgent(), "environment_id", env), "Environment not found"},
		}
		for _, tt := range tests {
			r := e.do(tt.method, tt.path, keyB, tt.body)
			require.Equal(t, 404, r.status, "%s %s: %s", tt.method, tt.path, r.body)
			require.Equal(t, map[string]any{"detail": tt.detail}, r.json(t), "%s %s", tt.method, tt.path)
		}
		require.Empty(t, e.do("GET", "/agents", keyB, nil).json(t)["data"])
		require.Empty(t, e.do("GET", "/environments", keyB, nil).json(t)["data"])
		// A's rows are untouched.
		a := e.do("GET", "/agents/"+agent, keyA, nil).json(t)
		require.Equal(t, "reviewer", a["name"])
		require.Nil(t, a["archived_at"])
		require.Equal(t, 200, e.do("GET", "/environments/"+env, keyA, nil).status)
	})
}

func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		secret := fmt.Sprintf("sk-secret-%d-value", time.Now().UnixNano())
		rotated := secret + "-rotated"
		r := e.do("POST", "/environments", key, map[string]any{"name": "s", "env_vars": map[string]any{"API_TOKEN": secret}})
		require.Equal(t, 201, r.status)
		id := r.json(t)["id"].(string)
		e.do("GET", "/environments/"+id, key, nil)
		e.do("GET", "/environments", key, nil)
		e.do("PUT", "/environments/"+id, key, map[string]any{"version": 1, "env_vars": map[string]any{"API_TOKEN": rotated}})
		e.do("GET", "/environments/"+id+"/versions", key, nil)
		e.do("POST", "/environments/"+id+"/archive", key, nil)
		// 422 items echo their input, but never secret values.
		r = e.do("POST", "/environments", key, map[string]any{"env_vars": map[string]any{"API_TOKEN": secret}})
		require.Equal(t, 422, r.status)
		require.Contains(t, string(r.body), `"env_vars":{"API_TOKEN":"[redacted]"}`)
		r = e.do("POST", "/environments", key, map[string]any{"name": "s3", "env_vars": map[string]any{"API_TOKEN": secret, "BAD-KEY": secret}})
		require.Equal(t, 422, r.status)

		for _, s := range []string{secret, rotated} {
			require.NotContains(t, e.allBodies(), s, "a response body leaked a secret")
			require.NotContains(t, e.logs.String(), s, "the log leaked a secret")
			require.NotContains(t, e.logs.String(), key, "the log leaked an API key")
			for _, table := range []string{"environments", "environment_versions"} {
				var n int
				require.NoError(t, e.db.Bun().NewRaw("SELECT COUNT(*) FROM "+table+" WHERE env_vars LIKE ?", "%"+s+"%").
					Scan(context.Background(), &n))
				require.Zero(t, n, "%s holds a secret in clear text", table)
			}
		}
	})
}

func mustUserID(t *testing.T, e *testEnv, key string) int64 {
	t.Helper()
	k, err := e.db.APIKeyGetByRaw(context.Background(), key)
	require.NoError(t, err)
	return k.UserID
}

// insertSession adds a minimal session row referencing an environment, for
// the delete guard (sessions have their own API elsewhere).
func insertSession(t *testing.T, db *persistence.DB, userID int64, envID string) {
	t.Helper()
	now := time.Now().UTC()
	_, err := db.Bun().NewRaw(`INSERT INTO agent_sessions (id, user_id, environment_id, runtime, prompt, backend,
		backend_handle, runtime_session_id, status, created_at, updated_at)
		VALUES (?, ?, ?, 'claude', '', 'sprites', '', ?, 'completed', ?, ?)`,
		persistence.NewUUID(), userID, envID, persistence.NewUUID(), now, now).Exec(context.Background())
	require.NoError(t, err)
}
