package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
)

// each runs fn on every database × backend pair.
func each(t *testing.T, fn func(t *testing.T, n *node)) {
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		for _, b := range []backendKind{backendLocal, backendFake} {
			t.Run(string(d)+"/"+string(b), func(t *testing.T) {
				t.Parallel()
				fn(t, startNode(t, nodeOpts{dialect: d, backend: b}))
			})
		}
	}
}

func TestSessionEndToEnd(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, n *node) {
		env := n.mustCreate("/environments", map[string]any{
			"name": "full",
			"packages": map[string]any{
				"apt": []any{"jq", "ripgrep"}, "npm": []any{"typescript"}, "pip": []any{"requests"},
				"cargo": []any{"bat"}, "gem": []any{"rake"}, "go": []any{"example.com/tool@v1"},
			},
			"env_vars":     map[string]any{"FOO": "bar baz", "QUOTE": "it's"},
			"setup_script": "  echo setup-ran > /tmp/setup-marker\n",
		}, 201)
		agent := n.mustCreate("/agents", map[string]any{
			"name": "e2e", "provider": "anthropic", "model": "claude-sonnet-4", "system": "SYS",
			"environment_id": env["id"],
			"skills": []any{
				map[string]any{"name": "lint", "description": "Lint code", "content": "Run the linter.\n"},
				map[string]any{"type": "github", "description": "Remote", "source": "acme/skills", "name": "remote"},
			},
			"mcp_servers": []any{
				map[string]any{"name": "docs", "url": "https://mcp.example/docs", "headers": map[string]any{"Authorization": "Bearer ${DOCS_TOKEN}"}},
				map[string]any{"name": "fs", "type": "stdio", "command": "npx", "args": []any{"-y", "fs-server"}, "env": map[string]any{"ROOT": "/workspace"}},
			},
		}, 201)
		ack := n.mustCreate("/sessions", map[string]any{
			"agent_id": agent["id"], "prompt": "hello", "timeout": 120,
			"secret_env_vars": map[string]any{"API_TOKEN": "s3cret"},
			"resources":       []any{map[string]any{"type": "github_repository", "url": "https://github.com/acme/widgets.git", "authorization_token": "ghp_abc"}},
		}, 202)
		id := ack["id"].(string)
		require.Equal(t, "pending", ack["status"])
		require.Equal(t, "/sessions/"+id+"/stream", ack["stream_url"])
		require.Equal(t, env["id"], ack["environment_id"])
		require.Equal(t, float64(1), ack["current_turn"])
		require.Equal(t, []any{map[string]any{"type": "github_repository", "url": "https://github.com/acme/widgets", "mount_path": "/workspace/widgets"}}, ack["resources"])

		evs := n.waitDone(id, 3*time.Minute)
		require.Equal(t, "start", evs[0].typ())
		require.Equal(t, map[string]any{"type": "start", "provider": "anthropic", "session_id": id}, evs[0].data)
		require.Equal(t, []string{
			"create_sprite:started", "create_sprite:done", "install_runtime:started", "install_runtime:done",
			"env_file:started", "env_file:done", "git_credentials:started", "git_credentials:done",
			"provision_setup:started", "provision_setup:done", "runtime_config:started", "runtime_config:done",
			"skills:started", "skills:done", "runtime_start:started",
		}, stages(evs), "stage events in order:\n%s", outputText(evs, "stderr"))
		last := evs[len(evs)-1]
		require.Equal(t, "exit", last.typ(), outputText(evs, "stderr"))
		require.Equal(t, float64(0), last.data["code"])
		stdout := outputText(evs, "stdout")
		require.Contains(t, stdout, "stdin: SYS\n\nhello\n", "the system prompt is prepended on turn 1")
		require.Contains(t, stdout, "argv: --dangerously-skip-permissions --print --verbose --output-format stream-json --model claude-sonnet-4 --session-id ")
		require.Contains(t, stdout, `"cwd":"/home/sprite"`)

		s := n.do("GET", "/sessions/"+id, nil).obj(t)
		require.Equal(t, "completed", s["status"])
		require.Equal(t, float64(0), s["exit_code"])
		require.Equal(t, float64(1), s["turn_count"])
		require.Equal(t, float64(1), s["current_turn"])
		require.Equal(t, "anthropic", s["provider"])
		require.Equal(t, ack["resources"], s["resources"])
		// The stored prompt is the request's, as sent; only the CLI got
		// the system prompt (issue 9 defect 9).
		row, err := n.app.DB().SessionGet(t.Context(), 0, id)
		require.NoError(t, err)
		require.Equal(t, "hello", row.Prompt)
		// The session records the backend that runs it (issue 9 defect 11).
		wantBackend := "local"
		if n.fake != nil {
			wantBackend = "sprites"
		}
		require.Equal(t, wantBackend, row.Backend)
		listed := n.do("GET", "/sessions", nil).obj(t)["data"].([]any)
		require.Len(t, listed, 1)
		require.Equal(t, s, listed[0], "list and get render the same session")

		h := n.handle(id)
		envFile, mode := n.sandboxRead(h, "/tmp/aod-env")
		sess, err := n.app.DB().SessionGet(t.Context(), 0, id)
		require.NoError(t, err)
		require.Equal(t, "AOD_SESSION_ID="+sess.RuntimeSessionID+"\nAOD_MODEL=claude-sonnet-4\nFOO='bar baz'\nQUOTE='it'\"'\"'s'\nAPI_TOKEN=s3cret\n", envFile)
		require.Equal(t, "600", mode)
		creds, mode := n.sandboxRead(h, "/tmp/.git-credentials")
		require.Equal(t, "https://ghp_abc:x-oauth-basic@github.com\n", creds)
		require.Equal(t, "600", mode)
		claudeJSON, _ := n.sandboxRead(h, "/home/sprite/.claude.json")
		require.JSONEq(t, `{"mcpServers":{"docs":{"type":"http","url":"https://mcp.example/docs","headers":{"Authorization":"Bearer ${DOCS_TOKEN}"}},
			"fs":{"type":"stdio","command":"npx","args":["-y","fs-server"],"env":{"ROOT":"/workspace"}}}}`, claudeJSON)
		skill, _ := n.sandboxRead(h, "/home/sprite/.claude/skills/lint/SKILL.md")
		require.Equal(t, "Run the linter.\n", skill)
		marker, _ := n.sandboxRead(h, "/tmp/setup-marker")
		require.Equal(t, "setup-ran\n", marker)
		readme, _ := n.sandboxRead(h, "/workspace/widgets/README.md")
		require.Equal(t, "widgets\n", readme, "the repo was cloned through the redirected GitHub URL")
		record, _ := n.sandboxRead(h, "/tmp/aod-standins.log")
		for _, line := range []string{
			"claude update", "apt-get update -qq", "apt-get install -y jq ripgrep", "cargo install bat", "gem install rake",
			"go install example.com/tool@v1", "npm install --global typescript", "pip install requests",
			"npx -y skills@latest add acme/skills --global --agent claude-code --yes --skill remote",
		} {
			require.Contains(t, record, line+"\n")
		}
		turns := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
		require.Len(t, turns, 1)
		turn := turns[0].(map[string]any)
		require.Equal(t, "completed", turn["status"])
		require.Equal(t, "hello", turn["prompt"], "the prompt as sent, without the system prompt")
		require.NotNil(t, turn["started_at"])
		require.NotNil(t, turn["ended_at"])
		// Secrets never reach responses or logs.
		for _, secret := range []string{"s3cret", "ghp_abc"} {
			require.NotContains(t, n.logs.String(), secret)
			for _, path := range []string{"/sessions/" + id, "/sessions", "/sessions/" + id + "/turns"} {
				require.NotContains(t, string(n.do("GET", path, nil).body), secret)
			}
			require.NotContains(t, outputTextAll(evs), secret+"\n", "the stand-ins do not print env vars")
		}
		require.NotContains(t, n.logs.String(), n.key)
	})
}

// outputTextAll concatenates every output event.
func outputTextAll(evs []streamEvent) string {
	return outputText(evs, "stdout") + outputText(evs, "stderr")
}
