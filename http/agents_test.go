package http_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// errItem is the comparable part of one pydantic-style 422 item.
type errItem struct {
	Type, Msg string
	Loc       []any
}

func errItems(t *testing.T, r *response) []errItem {
	t.Helper()
	d, ok := r.json(t)["detail"].([]any)
	require.True(t, ok, "detail is not a list: %s", r.body)
	var out []errItem
	for _, raw := range d {
		m := raw.(map[string]any)
		require.Contains(t, m, "input")
		require.Contains(t, m, "url")
		out = append(out, errItem{Type: m["type"].(string), Msg: m["msg"].(string), Loc: m["loc"].([]any)})
	}
	return out
}

func validAgent() map[string]any {
	return map[string]any{"name": "reviewer", "provider": "anthropic", "model": "claude-sonnet-4"}
}

func with(base map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == deleteKey {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

type sentinel struct{}

var deleteKey = sentinel{}

func TestAgentCreateShape(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		r := e.do("POST", "/agents", key, map[string]any{
			"name": "reviewer", "provider": " anthropic ", "model": "anthropic/claude-sonnet-4",
			"system": "Be terse.", "skills": []any{map[string]any{"name": "lint", "description": "d", "content": "c"}},
			"mcp_servers": []any{map[string]any{"name": "docs", "url": "https://mcp.example/x"}},
			"metadata":    map[string]any{"team": "infra"}, "tools": []any{"ignored"},
		})
		require.Equal(t, http.StatusCreated, r.status, string(r.body))
		a := r.json(t)
		require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$`, a["id"])
		require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$`, a["created_at"])
		require.Equal(t, a["created_at"], a["updated_at"])
		for k, v := range map[string]any{
			"type": "agent", "name": "reviewer", "description": nil, "system": "Be terse.", "provider": "anthropic",
			"model": "claude-sonnet-4", "runtime": "claude", "environment_id": nil, "version": float64(1), "archived_at": nil,
			"skills":      []any{map[string]any{"name": "lint", "description": "d", "content": "c"}},
			"mcp_servers": []any{map[string]any{"name": "docs", "url": "https://mcp.example/x"}},
			"metadata":    map[string]any{"team": "infra"},
		} {
			require.Equal(t, v, a[k], k)
		}
		require.NotContains(t, a, "tools")
		require.Len(t, a, 16)
		requireKeyOrder(t, string(r.body), "id", "type", "name", "description", "system", "provider", "model", "runtime",
			"environment_id", "skills", "mcp_servers", "metadata", "version", "created_at", "updated_at", "archived_at")

		// google → gemini; opencode serves any provider (D11).
		r = e.do("POST", "/agents", key, with(validAgent(), "provider", "google", "model", "gemini-2.5-pro"))
		require.Equal(t, 201, r.status)
		require.Equal(t, "gemini", r.json(t)["runtime"])
		r = e.do("POST", "/agents", key, with(validAgent(), "provider", "openai", "runtime", "opencode"))
		require.Equal(t, 201, r.status)
		require.Equal(t, "opencode", r.json(t)["runtime"])
	})
}

func TestAgentCreateValidation(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return fmt.Sprintf("%0*d", n, 0) }
	type want struct {
		str   string    // a string 422 detail
		items []errItem // or a list
	}
	tests := []struct {
		name string
		body map[string]any
		want want
	}{
		{"missing all", map[string]any{}, want{items: []errItem{
			{"missing", "Field required", []any{"name"}}, {"missing", "Field required", []any{"provider"}},
			{"missing", "Field required", []any{"model"}}}}},
		{"name type", with(validAgent(), "name", 5), want{items: []errItem{{"string_type", "Input should be a valid string", []any{"name"}}}}},
		{"name too long", with(validAgent(), "name", long(201)), want{items: []errItem{{"string_too_long", "String should have at most 200 characters", []any{"name"}}}}},
		{"provider too long", with(validAgent(), "provider", long(33)), want{items: []errItem{{"string_too_long", "String should have at most 32 characters", []any{"provider"}}}}},
		{"model too long", with(validAgent(), "model", long(101)), want{items: []errItem{{"string_too_long", "String should have at most 100 characters", []any{"model"}}}}},
		{"blank model", with(validAgent(), "model", "  "), want{items: []errItem{{"value_error", "Value error, Model must be a non-empty string", []any{"model"}}}}},
		{"unknown provider", with(validAgent(), "provider", "mistral"), want{str: "Unknown provider: mistral. Must be one of: ['anthropic', 'google', 'openai']"}},
		{"prefix mismatch", with(validAgent(), "model", "openai/gpt-4o"), want{str: "Model provider prefix 'openai' does not match provider 'anthropic'"}},
		{"empty after prefix", with(validAgent(), "model", "anthropic/"), want{str: "Model must be a non-empty string"}},
		{"runtime mismatch", with(validAgent(), "runtime", "codex"), want{str: "Runtime 'codex' cannot serve provider 'anthropic'"}},
		{"skills not list", with(validAgent(), "skills", "x"), want{items: []errItem{{"list_type", "Input should be a valid list", []any{"skills"}}}}},
		{"metadata not object", with(validAgent(), "metadata", []any{}), want{items: []errItem{{"dict_type", "Input should be a valid dictionary", []any{"metadata"}}}}},
	}
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		for _, tt := range tests {
			r := e.do("POST", "/agents", key, tt.body)
			require.Equal(t, 422, r.status, "%s: %s", tt.name, r.body)
			if tt.want.str != "" {
				require.Equal(t, map[string]any{"detail": tt.want.str}, r.json(t), tt.name)
				continue
			}
			require.Equal(t, tt.want.items, errItems(t, r), tt.name)
		}
		// The missing-field item carries the whole input.
		r := e.do("POST", "/agents", key, map[string]any{"name": "x", "provider": "anthropic"})
		d := r.json(t)["detail"].([]any)[0].(map[string]any)
		require.Equal(t, map[string]any{"name": "x", "provider": "anthropic"}, d["input"])
		require.Equal(t, []any{"model"}, d["loc"])
	})
}

func TestSkillsAndMCPValidation(t *testing.T) {
	t.Parallel()
	skill := func(kv ...any) map[string]any {
		return with(map[string]any{"name": "lint", "description": "d", "content": "c"}, kv...)
	}
	gh := func(kv ...any) map[string]any {
		return with(map[string]any{"type": "github", "description": "d", "source": "owner/repo"}, kv...)
	}
	many := func(n int, mk func(i int) any) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = mk(i)
		}
		return out
	}
	tests := []struct {
		name     string
		field    string
		value    any
		contains []string // fragments of the value_error message (D12)
	}{
		{"too many skills", "skills", many(21, func(i int) any { return skill("name", fmt.Sprintf("s%d", i)) }), []string{"20"}},
		{"unknown key", "skills", []any{skill("extra", 1)}, []string{"unknown keys", "skills[0]"}},
		{"content not string", "skills", []any{skill("content", 3)}, []string{"must be a string", "skills[0]", "content"}},
		{"bad name", "skills", []any{skill("name", "Bad_Name")}, []string{"skills[0]", "name"}},
		{"content too big", "skills", []any{skill("content", string(make([]byte, 65537)))}, []string{"skills[0]", "content"}},
		{"SKILL_EOF", "skills", []any{skill("content", "a\nSKILL_EOF\n")}, []string{"SKILL_EOF"}},
		{"duplicate", "skills", []any{skill(), skill()}, []string{"duplicate", "skills[1]"}},
		{"duplicate github source", "skills", []any{gh(), gh()}, []string{"duplicate", "skills[1]"}},
		{"github bad source", "skills", []any{gh("source", "not a repo")}, []string{"skills[0]", "source"}},
		{"github content rejected", "skills", []any{gh("content", "x")}, []string{"unknown keys", "skills[0]"}},
		{"github wrong type", "skills", []any{gh("type", "gitlab")}, []string{"skills[0]", "type"}},
		{"non-object skill", "skills", []any{"lint"}, []string{"skills[0]"}},
		{"description too long", "skills", []any{skill("description", string(make([]byte, 1025)))}, []string{"skills[0]", "description"}},
		{"too many mcp", "mcp_servers", many(21, func(i int) any { return map[string]any{"name": fmt.Sprintf("m%d", i), "url": "u"} }), []string{"20"}},
		{"mcp duplicate", "mcp_servers", []any{map[string]any{"name": "a", "url": "u"}, map[string]any{"name": "a", "url": "u"}}, []string{"duplicate name"}},
		{"mcp unknown type", "mcp_servers", []any{map[string]any{"name": "a", "type": "grpc"}}, []string{"unknown type 'grpc'"}},
		{"mcp url missing", "mcp_servers", []any{map[string]any{"name": "a"}}, []string{"mcp_servers[0] (url): missing required field: url"}},
		{"mcp stdio missing", "mcp_servers", []any{map[string]any{"name": "a", "type": "stdio"}}, []string{"mcp_servers[0] (stdio): missing required field: command"}},
	}
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		for _, tt := range tests {
			r := e.do("POST", "/agents", key, with(validAgent(), tt.field, tt.value))
			require.Equal(t, 422, r.status, "%s: %s", tt.name, r.body)
			items := errItems(t, r)
			require.Len(t, items, 1, tt.name)
			require.Equal(t, "value_error", items[0].Type, tt.name)
			require.Equal(t, []any{tt.field}, items[0].Loc, tt.name)
			for _, frag := range tt.contains {
				require.Contains(t, items[0].Msg, frag, tt.name)
			}
		}
		ok := e.do("POST", "/agents", key, with(validAgent(),
			"skills", []any{skill(), gh(), gh("name", "named", "source", "o/r2")},
			"mcp_servers", []any{
				map[string]any{"name": "a", "url": "https://x", "headers": map[string]any{"Authorization": "Bearer ${TOKEN}"}},
				map[string]any{"name": "b", "type": "stdio", "command": "npx", "args": []any{"-y", "srv"}, "env": map[string]any{"K": "v"}},
			}))
		require.Equal(t, 201, ok.status, string(ok.body))
	})
}

func TestAgentLifecycle(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		var ids []string
		for i := range 3 {
			r := e.do("POST", "/agents", key, with(validAgent(), "name", fmt.Sprintf("a%d", i)))
			require.Equal(t, 201, r.status)
			ids = append(ids, r.json(t)["id"].(string))
		}
		r := e.do("GET", "/agents", key, nil)
		require.Equal(t, 200, r.status)
		data := r.json(t)["data"].([]any)
		require.Len(t, data, 3)
		require.Equal(t, ids[2], data[0].(map[string]any)["id"], "newest first")

		id := ids[0]
		// PUT: version mismatch, then a real change, then a no-op.
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 7, "name": "x"})
		require.Equal(t, 409, r.status)
		require.Equal(t, "Version mismatch: expected 1, got 7", r.json(t)["detail"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": "1", "name": "renamed", "metadata": map[string]any{"a": 1, "b": 2}})
		require.Equal(t, 200, r.status, string(r.body))
		require.Equal(t, float64(2), r.json(t)["version"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 2, "name": "renamed", "metadata": map[string]any{"a": 1}})
		require.Equal(t, 200, r.status)
		require.Equal(t, float64(2), r.json(t)["version"], "no-op PUT keeps the version")
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 2, "metadata": map[string]any{"a": "", "c": "new"}})
		require.Equal(t, map[string]any{"b": float64(2), "c": "new"}, r.json(t)["metadata"], "metadata merge")
		require.Equal(t, float64(3), r.json(t)["version"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 3, "model": "openai/gpt-4o"})
		require.Equal(t, 422, r.status)
		require.Equal(t, "Model provider prefix 'openai' does not match provider 'anthropic'", r.json(t)["detail"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 3, "model": " "})
		require.Equal(t, 422, r.status)
		require.IsType(t, []any{}, r.json(t)["detail"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"name": "x"})
		require.Equal(t, 422, r.status)
		require.Equal(t, []errItem{{"missing", "Field required", []any{"version"}}}, errItems(t, r))
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 3, "provider": "openai", "model": "gpt-4o"})
		require.Equal(t, 200, r.status)
		require.Equal(t, "codex", r.json(t)["runtime"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 4, "runtime": "claude"})
		require.Equal(t, 422, r.status)
		require.Equal(t, "Runtime 'claude' cannot serve provider 'openai'", r.json(t)["detail"])

		// Environment attach and explicit detach.
		env := e.do("POST", "/environments", key, map[string]any{"name": "env-" + id[:8]}).json(t)
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 4, "environment_id": env["id"]})
		require.Equal(t, env["id"], r.json(t)["environment_id"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 5, "name": "again"})
		require.Equal(t, env["id"], r.json(t)["environment_id"], "absent environment_id is unchanged")
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 6, "environment_id": nil})
		require.Nil(t, r.json(t)["environment_id"])
		require.Equal(t, float64(7), r.json(t)["version"])
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 7, "environment_id": "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"})
		require.Equal(t, 404, r.status)
		require.Equal(t, "Environment not found", r.json(t)["detail"])

		// Versions: highest first, snapshots of each version.
		r = e.do("GET", "/agents/"+id+"/versions", key, nil)
		require.Equal(t, 200, r.status)
		vs := r.json(t)["data"].([]any)
		require.Len(t, vs, 7)
		first := vs[0].(map[string]any)
		require.Equal(t, float64(7), first["version"])
		require.Equal(t, id, first["id"])
		require.NotContains(t, first, "updated_at")
		require.NotContains(t, first, "archived_at")
		require.Equal(t, "a0", vs[6].(map[string]any)["name"])

		// Archive: 200, then 409; archived agents are hidden from the list
		// but still returned by GET, and cannot be updated.
		r = e.do("POST", "/agents/"+id+"/archive", key, nil)
		require.Equal(t, 200, r.status)
		require.NotNil(t, r.json(t)["archived_at"])
		r = e.do("POST", "/agents/"+id+"/archive", key, nil)
		require.Equal(t, 409, r.status)
		require.Equal(t, "Agent is already archived", r.json(t)["detail"])
		r = e.do("GET", "/agents/"+id, key, nil)
		require.Equal(t, 200, r.status)
		require.Len(t, e.do("GET", "/agents", key, nil).json(t)["data"], 2)
		r = e.do("PUT", "/agents/"+id, key, map[string]any{"version": 7, "name": "x"})
		require.Equal(t, 409, r.status)
		require.Equal(t, "Cannot update an archived agent", r.json(t)["detail"])

		// Archived environments cannot be assigned.
		e.do("POST", "/environments/"+env["id"].(string)+"/archive", key, nil)
		r = e.do("POST", "/agents", key, with(validAgent(), "environment_id", env["id"]))
		require.Equal(t, 409, r.status)
		require.Equal(t, "Cannot assign an archived environment to an agent", r.json(t)["detail"])
		r = e.do("GET", "/agents/0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90", key, nil)
		require.Equal(t, 404, r.status)
		require.Equal(t, "Agent not found", r.json(t)["detail"])
	})
}

func TestConcurrentAgentPuts(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *testEnv) {
		key, _ := e.user()
		id := e.do("POST", "/agents", key, validAgent()).json(t)["id"].(string)
		var wg sync.WaitGroup
		codes := make(chan int, 20)
		names := make(chan string, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("writer-%d", i)
				r := e.do("PUT", "/agents/"+id, key, map[string]any{"version": 1, "name": name})
				codes <- r.status
				if r.status == 200 {
					names <- name
				}
			}()
		}
		wg.Wait()
		close(codes)
		close(names)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		require.Equal(t, map[int]int{200: 1, 409: 19}, count)
		winner := <-names
		a := e.do("GET", "/agents/"+id, key, nil).json(t)
		require.Equal(t, winner, a["name"], "no lost update")
		require.Equal(t, float64(2), a["version"])
		require.Len(t, e.do("GET", "/agents/"+id+"/versions", key, nil).json(t)["data"], 2)
	})
}

// requireKeyOrder checks that the top-level keys appear in this order.
func requireKeyOrder(t *testing.T, body string, keys ...string) {
	t.Helper()
	last := -1
	for _, k := range keys {
		i := strings.Index(body, `"`+k+`":`)
		require.Greater(t, i, last, "key %q out of order in %s", k, body)
		last = i
	}
}
