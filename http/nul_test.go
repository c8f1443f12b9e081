package http_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
)

// TestNULIsRejected (issue 9 defect 10): a NUL character in any stored
// string of any create or update body is a 422 value_error located at the
// string, never a 500 from a database that refuses it. Secret inputs stay
// redacted in the echo.
func TestNULIsRejected(t *testing.T) {
	t.Parallel()
	const nul = "a\x00b"
	agent := func() map[string]any {
		return map[string]any{"name": "a", "provider": "anthropic", "model": "claude-sonnet-4"}
	}
	env := func() map[string]any { return map[string]any{"name": "e"} }
	sess := func() map[string]any {
		return map[string]any{"agent_id": persistence.NewUUID(), "prompt": "hi"}
	}
	repo := func(k, v string) map[string]any {
		r := map[string]any{"type": "github_repository", "url": "https://github.com/acme/widgets"}
		r[k] = v
		return map[string]any{"resources": []any{r}}
	}
	type tc struct {
		name   string
		route  string // agents, agent, environments, environment, sessions, prompt
		base   func() map[string]any
		set    map[string]any
		loc    []any
		secret bool
	}
	cases := []tc{
		{"agent name", "agents", agent, map[string]any{"name": nul}, []any{"name"}, false},
		{"agent description", "agents", agent, map[string]any{"description": nul}, []any{"description"}, false},
		{"agent system", "agents", agent, map[string]any{"system": nul}, []any{"system"}, false},
		{"agent provider", "agents", agent, map[string]any{"provider": nul}, []any{"provider"}, false},
		{"agent model", "agents", agent, map[string]any{"model": nul}, []any{"model"}, false},
		{"agent runtime", "agents", agent, map[string]any{"runtime": nul}, []any{"runtime"}, false},
		{"agent environment_id", "agents", agent, map[string]any{"environment_id": nul}, []any{"environment_id"}, false},
		{"agent skill content", "agents", agent, map[string]any{"skills": []any{map[string]any{"name": "s", "description": "d", "content": nul}}}, []any{"skills", 0, "content"}, false},
		{"agent skill description", "agents", agent, map[string]any{"skills": []any{map[string]any{"type": "github", "source": "acme/skills", "name": "s", "description": nul}}}, []any{"skills", 0, "description"}, false},
		{"agent mcp url", "agents", agent, map[string]any{"mcp_servers": []any{map[string]any{"name": "m", "url": "https://x/" + nul}}}, []any{"mcp_servers", 0, "url"}, false},
		{"agent mcp header", "agents", agent, map[string]any{"mcp_servers": []any{map[string]any{"name": "m", "url": "https://x", "headers": map[string]any{"H": nul}}}}, []any{"mcp_servers", 0, "headers", "H"}, false},
		{"agent mcp arg", "agents", agent, map[string]any{"mcp_servers": []any{map[string]any{"name": "m", "type": "stdio", "command": "npx", "args": []any{nul}}}}, []any{"mcp_servers", 0, "args", 0}, false},
		{"agent metadata value", "agents", agent, map[string]any{"metadata": map[string]any{"k": []any{nul}}}, []any{"metadata", "k", 0}, false},
		{"agent metadata key", "agents", agent, map[string]any{"metadata": map[string]any{nul: 1}}, []any{"metadata", nul, "[key]"}, false},
		{"agent update system", "agent", nil, map[string]any{"system": nul}, []any{"system"}, false},
		{"agent update name", "agent", nil, map[string]any{"name": nul}, []any{"name"}, false},
		{"agent update metadata", "agent", nil, map[string]any{"metadata": map[string]any{"k": nul}}, []any{"metadata", "k"}, false},
		{"environment name", "environments", env, map[string]any{"name": nul}, []any{"name"}, false},
		{"environment setup_script", "environments", env, map[string]any{"setup_script": nul}, []any{"setup_script"}, false},
		{"environment package", "environments", env, map[string]any{"packages": map[string]any{"apt": []any{nul}}}, []any{"packages", "apt", 0}, false},
		{"environment env var value", "environments", env, map[string]any{"env_vars": map[string]any{"K": nul}}, []any{"env_vars", "K"}, true},
		{"environment allowed host", "environments", env, map[string]any{"networking": map[string]any{"type": "limited", "allowed_hosts": []any{nul}}}, []any{"networking", "allowed_hosts", 0}, false},
		{"environment update name", "environment", nil, map[string]any{"name": nul}, []any{"name"}, false},
		{"environment update setup_script", "environment", nil, map[string]any{"setup_script": nul}, []any{"setup_script"}, false},
		{"environment update env var", "environment", nil, map[string]any{"env_vars": map[string]any{"K": nul}}, []any{"env_vars", "K"}, true},
		{"session prompt", "sessions", sess, map[string]any{"prompt": nul}, []any{"prompt"}, false},
		{"session agent_id", "sessions", sess, map[string]any{"agent_id": nul}, []any{"agent_id"}, false},
		{"session environment_id", "sessions", sess, map[string]any{"environment_id": nul}, []any{"environment_id"}, false},
		// A resource url with NUL already fails the GitHub URL pattern.
		{"session resource mount_path", "sessions", func() map[string]any { return merge(sess(), repo("mount_path", "/workspace/"+nul)) }, nil, []any{"resources", 0, "mount_path"}, false},
		{"session resource token", "sessions", func() map[string]any { return merge(sess(), repo("authorization_token", "ghp_"+nul)) }, nil, []any{"resources", 0, "authorization_token"}, true},
		{"session secret env var", "sessions", sess, map[string]any{"secret_env_vars": map[string]any{"K": nul}}, []any{"secret_env_vars", "K"}, true},
		{"prompt", "prompt", nil, map[string]any{"prompt": nul}, []any{"prompt"}, false},
	}
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, u := e.user()
		r := e.do("POST", "/agents", key, agent())
		require.Equal(t, 201, r.status, string(r.body))
		agentID := r.json(t)["id"].(string)
		r = e.do("POST", "/environments", key, env())
		require.Equal(t, 201, r.status, string(r.body))
		envID := r.json(t)["id"].(string)
		s := &persistence.Session{UserID: u.ID, AgentID: &agentID, Provider: "anthropic", Runtime: "claude", Backend: "local", BackendHandle: "h"}
		_, err := e.db.SessionCreate(t.Context(), &persistence.SessionCreateParams{Session: s, Prompt: "p", Timeout: 60, DefaultLimit: 10})
		require.NoError(t, err)
		err = e.db.LogAppend(t.Context(), nil, persistence.SetSession(s.ID, map[string]any{"status": persistence.StatusCompleted}, true))
		require.NoError(t, err)
		for _, c := range cases {
			body := map[string]any{}
			if c.base != nil {
				body = c.base()
			}
			var method, path string
			switch c.route {
			case "agents", "environments", "sessions":
				method, path = "POST", "/"+c.route
			case "agent":
				method, path, body["version"] = "PUT", "/agents/"+agentID, 1
			case "environment":
				method, path, body["version"] = "PUT", "/environments/"+envID, 1
			case "prompt":
				method, path = "POST", "/sessions/"+s.ID+"/prompt"
			}
			for k, v := range c.set {
				body[k] = v
			}
			r := e.do(method, path, key, body)
			require.Equal(t, 422, r.status, "%s: %s", c.name, r.body)
			var got struct {
				Detail []map[string]any `json:"detail"`
			}
			require.NoError(t, json.Unmarshal(r.body, &got), c.name)
			require.Len(t, got.Detail, 1, "%s: %s", c.name, r.body)
			d := got.Detail[0]
			wantLoc, _ := json.Marshal(c.loc)
			gotLoc, _ := json.Marshal(d["loc"])
			require.Equal(t, string(wantLoc), string(gotLoc), c.name)
			require.Equal(t, "value_error", d["type"], c.name)
			require.Equal(t, "Value error, String must not contain NUL characters", d["msg"], c.name)
			require.Equal(t, "https://errors.pydantic.dev/2.11/v/value_error", d["url"], c.name)
			if c.secret {
				require.Equal(t, "[redacted]", d["input"], c.name)
				require.NotContains(t, string(r.body), "\\u0000", "%s: a secret is never echoed", c.name)
			} else {
				require.True(t, strings.Contains(fmt.Sprint(d["input"]), "\x00"), "%s: input echoes the string: %v", c.name, d["input"])
			}
		}
		require.NotContains(t, e.logs.String(), "request failed", "no request reached the 500 path")
	})
}

func merge(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}
