package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/local"
)

func (n *node) agent(body map[string]any) string {
	n.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	if body["name"] == nil {
		body["name"] = "a"
	}
	if body["provider"] == nil {
		body["provider"] = "anthropic"
	}
	if body["model"] == nil {
		body["model"] = "claude-sonnet-4"
	}
	return n.mustCreate("/agents", body, 201)["id"].(string)
}

func (n *node) session(agentID, prompt string, extra ...any) string {
	n.t.Helper()
	body := map[string]any{"agent_id": agentID, "prompt": prompt}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i].(string)] = extra[i+1]
	}
	return n.mustCreate("/sessions", body, 202)["id"].(string)
}

func TestMultiTurn(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, n *node) {
		id := n.session(n.agent(map[string]any{"system": "SYS"}), "first")
		evs := n.waitDone(id, 2*time.Minute)
		require.Equal(t, "exit", evs[len(evs)-1].typ())
		lastID := evs[len(evs)-1].idLine
		for turn := 2; turn <= 3; turn++ {
			ack := n.mustCreate("/sessions/"+id+"/prompt", map[string]any{"prompt": fmt.Sprintf("turn %d", turn)}, 202)
			require.Equal(t, map[string]any{"id": id, "status": "pending", "stream_url": "/sessions/" + id + "/stream",
				"current_turn": float64(turn)}, ack)
			// The client reconnects with its last id and sees exactly the next turn.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			next := n.stream(ctx, id, lastID)
			cancel()
			out := outputText(next, "stdout")
			require.Contains(t, out, fmt.Sprintf("stdin: turn %d\n", turn), "the raw prompt, no system prompt")
			require.NotContains(t, out, "stdin: first")
			require.Contains(t, out, "--resume ", "turns 2+ use the continue argv")
			require.NotContains(t, out, "--session-id")
			var turnStarts []float64
			for _, e := range next {
				if e.typ() == "turn_start" {
					turnStarts = append(turnStarts, e.data["turn"].(float64))
					require.Empty(t, e.idLine, "turn_start has no id: line")
				}
			}
			require.Equal(t, []float64{float64(turn)}, turnStarts)
			require.Equal(t, "exit", next[len(next)-1].typ())
			lastID = next[len(next)-1].idLine
		}
		s := n.do("GET", "/sessions/"+id, nil).obj(t)
		require.Equal(t, float64(3), s["current_turn"])
		require.Equal(t, float64(3), s["turn_count"])
		turns := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
		require.Len(t, turns, 3)
		for i, raw := range turns {
			tu := raw.(map[string]any)
			require.Equal(t, float64(i+1), tu["turn_number"])
			require.Equal(t, "completed", tu["status"])
		}
		require.Equal(t, "turn 3", turns[2].(map[string]any)["prompt"])

		// A replay of the whole session shows all output and one terminal event.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		all := n.stream(ctx, id, "")
		cancel()
		terminals := 0
		for _, e := range all {
			switch e.typ() {
			case "exit", "error", "terminated", "stale":
				terminals++
			}
		}
		require.Equal(t, 1, terminals)
		for _, p := range []string{"SYS\n\nfirst", "turn 2", "turn 3"} {
			require.Contains(t, outputText(all, "stdout"), "stdin: "+p+"\n")
		}
	})
}

func TestSessionErrors(t *testing.T) {
	t.Parallel()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: d, backend: backendLocal, env: map[string]string{"DEFAULT_MAX_CONCURRENT_SESSIONS": "2"}})
			agent := n.agent(nil)
			archivedAgent := n.agent(nil)
			n.mustCreate("/agents/"+archivedAgent+"/archive", nil, 200)
			env := n.mustCreate("/environments", map[string]any{"name": "e"}, 201)["id"].(string)
			archivedEnv := n.mustCreate("/environments", map[string]any{"name": "old"}, 201)["id"].(string)
			n.mustCreate("/environments/"+archivedEnv+"/archive", nil, 200)
			missing := "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"

			tests := []struct {
				name   string
				body   any
				status int
				detail any
			}{
				{"unknown agent", map[string]any{"agent_id": missing, "prompt": "p"}, 404, "Agent not found"},
				{"malformed agent", map[string]any{"agent_id": "nope", "prompt": "p"}, 404, "Agent not found"},
				{"archived agent", map[string]any{"agent_id": archivedAgent, "prompt": "p"}, 409, "Cannot create session with archived agent"},
				{"unknown env", map[string]any{"agent_id": agent, "prompt": "p", "environment_id": missing}, 404, "Environment not found"},
				{"archived env", map[string]any{"agent_id": agent, "prompt": "p", "environment_id": archivedEnv}, 409, "Cannot create session with archived environment"},
				{"timeout low", map[string]any{"agent_id": agent, "prompt": "p", "timeout": 9}, 422, nil},
				{"timeout high", map[string]any{"agent_id": agent, "prompt": "p", "timeout": 3601}, 422, nil},
				{"missing prompt", map[string]any{"agent_id": agent}, 422, nil},
				{"bad repo", map[string]any{"agent_id": agent, "prompt": "p", "resources": []any{map[string]any{"type": "github_repository", "url": "https://gitlab.com/a/b"}}}, 422, nil},
				{"bad secret key", map[string]any{"agent_id": agent, "prompt": "p", "secret_env_vars": map[string]any{"BAD-KEY": "v"}}, 422, nil},
			}
			for _, tt := range tests {
				r := n.do("POST", "/sessions", tt.body)
				require.Equal(t, tt.status, r.status, "%s: %s", tt.name, r.body)
				if tt.detail != nil {
					require.Equal(t, tt.detail, r.obj(t)["detail"], tt.name)
				}
			}

			// Quota: 2 active sessions, the third is 429 with limit and active.
			s1 := n.session(agent, "sleep:30", "environment_id", env)
			s2 := n.session(agent, "sleep:30")
			r := n.do("POST", "/sessions", map[string]any{"agent_id": agent, "prompt": "p"})
			require.Equal(t, 429, r.status)
			require.Equal(t, map[string]any{"detail": "Concurrent session limit reached (2/2). Terminate an active session before starting a new one.",
				"limit": float64(2), "active": float64(2)}, r.obj(t))

			// Prompt/delete on active sessions.
			waitStatus(t, n, s1, "running")
			r = n.do("POST", "/sessions/"+s1+"/prompt", map[string]any{"prompt": "x"})
			require.Equal(t, 409, r.status)
			require.Equal(t, "Session is already running", r.obj(t)["detail"])
			r = n.do("DELETE", "/sessions/"+s1+"/delete", nil)
			require.Equal(t, 409, r.status)
			require.Equal(t, "Cannot delete an active session", r.obj(t)["detail"])
			r = n.do("DELETE", "/environments/"+env+"/delete", nil)
			require.Equal(t, 409, r.status, "sessions reference the environment")

			// Terminate: 200, then 409; prompt on terminated; delete works.
			r = n.do("POST", "/sessions/"+s1+"/terminate", nil)
			require.Equal(t, 200, r.status)
			require.Equal(t, map[string]any{"id": s1, "status": "terminated"}, r.obj(t))
			r = n.do("POST", "/sessions/"+s1+"/terminate", nil)
			require.Equal(t, 409, r.status)
			require.Equal(t, "Session is already terminated", r.obj(t)["detail"])
			r = n.do("POST", "/sessions/"+s1+"/prompt", map[string]any{"prompt": "x"})
			require.Equal(t, "Session has been terminated", r.obj(t)["detail"])
			n.mustCreate("/sessions/"+s2+"/terminate", nil, 200)

			// A failed session cannot be resumed.
			failed := n.session(agent, "exit:3")
			evs := n.waitDone(failed, time.Minute)
			require.Equal(t, map[string]any{"type": "exit", "id": evs[len(evs)-1].data["id"], "code": float64(3)}, evs[len(evs)-1].data)
			r = n.do("POST", "/sessions/"+failed+"/prompt", map[string]any{"prompt": "x"})
			require.Equal(t, 409, r.status)
			require.Equal(t, "Session has failed and cannot be resumed. Start a new session.", r.obj(t)["detail"])

			// A session still provisioning has a pending turn already.
			slowEnv := n.mustCreate("/environments", map[string]any{"name": "slow", "setup_script": "sleep 30"}, 201)["id"].(string)
			prov := n.session(agent, "p", "environment_id", slowEnv)
			waitStage(t, n, prov, "provision_setup", "started")
			r = n.do("POST", "/sessions/"+prov+"/prompt", map[string]any{"prompt": "x"})
			require.Equal(t, 409, r.status)
			require.Equal(t, "Session already has a pending turn", r.obj(t)["detail"])
			n.mustCreate("/sessions/"+prov+"/terminate", nil, 200)

			// Completed: prompt body validation, then a pending turn blocks another.
			done := n.session(agent, "ok")
			n.waitDone(done, time.Minute)
			r = n.do("POST", "/sessions/"+done+"/prompt", map[string]any{"prompt": 5})
			require.Equal(t, 422, r.status)
			r = n.do("POST", "/sessions/"+done+"/prompt", "not an object")
			require.Equal(t, 400, r.status, "a JSON string is valid JSON but not an object: %s", r.body)
			require.Equal(t, "Invalid JSON", r.obj(t)["detail"])

			// 404s and tenant isolation.
			for _, path := range []string{"/sessions/" + missing, "/sessions/" + missing + "/turns"} {
				r = n.do("GET", path, nil)
				require.Equal(t, 404, r.status)
				require.Equal(t, "Session not found", r.obj(t)["detail"])
			}
			other := *n
			_, other.key = newUserKey(t, n)
			for _, c := range []struct{ m, p string }{{"GET", "/sessions/" + done}, {"GET", "/sessions/" + done + "/turns"},
				{"POST", "/sessions/" + done + "/terminate"}, {"DELETE", "/sessions/" + done + "/delete"}, {"GET", "/sessions/" + done + "/stream"}} {
				r = other.do(c.m, c.p, map[string]any{"prompt": "x"})
				require.Equal(t, 404, r.status, "%s %s", c.m, c.p)
			}
			require.Empty(t, other.do("GET", "/sessions", nil).obj(t)["data"])

			r = n.do("DELETE", "/sessions/"+done+"/delete", nil)
			require.Equal(t, 200, r.status)
			require.Equal(t, map[string]any{"detail": "Session deleted"}, r.obj(t))
			require.Equal(t, 404, n.do("GET", "/sessions/"+done, nil).status)
		})
	}
}

// TestQuotaUnderConcurrentCreates: a per-user override of 3 holds when 10
// creates race, on both databases.
func TestQuotaUnderConcurrentCreates(t *testing.T) {
	t.Parallel()
	persistenceDialects(t, func(t *testing.T, d migrations.Dialect) {
		n := startNode(t, nodeOpts{dialect: d, backend: backendFake})
		limit := 3
		require.NoError(t, n.app.DB().UserQuotaSet(context.Background(), n.userID, &limit))
		agent := n.agent(nil)
		var wg sync.WaitGroup
		codes := make(chan int, 10)
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes <- n.do("POST", "/sessions", map[string]any{"agent_id": agent, "prompt": "quiet:30"}).status
			}()
		}
		wg.Wait()
		close(codes)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		require.Equal(t, map[int]int{202: 3, 429: 7}, count)
		for _, raw := range n.do("GET", "/sessions", nil).obj(t)["data"].([]any) {
			n.mustCreate("/sessions/"+raw.(map[string]any)["id"].(string)+"/terminate", nil, 200)
		}
	})
}

func TestBackendUnavailableIs503(t *testing.T) {
	t.Parallel()
	var broken atomic.Bool
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal, wrap: func(b sprites.Backend) sprites.Backend {
		return &breakableBackend{Backend: b, broken: &broken}
	}})
	agent := n.agent(nil)
	done := n.session(agent, "ok")
	n.waitDone(done, time.Minute)
	// The backend becomes unusable (D1: e.g. bubblewrap uninstalled).
	broken.Store(true)
	r := n.do("POST", "/sessions", map[string]any{"agent_id": agent, "prompt": "p"})
	require.Equal(t, 503, r.status)
	require.Equal(t, "Session backend is not configured", r.obj(t)["detail"])
	r = n.do("POST", "/sessions/"+done+"/prompt", map[string]any{"prompt": "p"})
	require.Equal(t, 503, r.status)
	require.Equal(t, "Session backend token is not configured", r.obj(t)["detail"])
	h := n.do("GET", "/health", nil)
	require.Equal(t, 503, h.status)
	require.Contains(t, string(h.body), `"sandbox":"fail: `)
}

// breakableBackend fails Check while broken is set.
type breakableBackend struct {
	sprites.Backend
	broken *atomic.Bool
}

func (b *breakableBackend) Check(ctx context.Context) error {
	if b.broken.Load() {
		return errors.New("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
	}
	return b.Backend.Check(ctx)
}

func TestPromptOnVanishedSandbox(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendFake})
	id := n.session(n.agent(nil), "ok")
	n.waitDone(id, time.Minute)
	require.NoError(t, n.backend.Delete(context.Background(), n.handle(id)))
	r := n.do("POST", "/sessions/"+id+"/prompt", map[string]any{"prompt": "again"})
	require.Equal(t, 409, r.status)
	require.Equal(t, "Session backend is no longer available; start a new session.", r.obj(t)["detail"])
}

func TestTerminate(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, n *node) {
		agent := n.agent(nil)
		// During a turn: the exec is killed, the stream ends with terminated.
		id := n.session(agent, "sleep:60")
		waitOutput(t, n, id, "tick 0")
		h := n.handle(id)
		n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
		evs := n.waitDone(id, time.Minute)
		last := evs[len(evs)-1]
		require.Equal(t, "terminated", last.typ())
		require.Equal(t, "Session terminated", last.data["message"])
		turns := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
		require.Equal(t, "failed", turns[0].(map[string]any)["status"])
		waitGone(t, n, h)
		s := n.do("GET", "/sessions/"+id, nil).obj(t)
		require.Equal(t, "terminated", s["status"], "terminated is never overwritten")

		// During provisioning: a slow setup script.
		env := n.mustCreate("/environments", map[string]any{"name": "slow-" + id[:6], "setup_script": "sleep 60"}, 201)["id"].(string)
		id2 := n.session(agent, "never", "environment_id", env)
		waitStage(t, n, id2, "provision_setup", "started")
		n.mustCreate("/sessions/"+id2+"/terminate", nil, 200)
		evs = n.waitDone(id2, time.Minute)
		require.Equal(t, "terminated", evs[len(evs)-1].typ())
		require.NotContains(t, stages(evs), "runtime_start:started", "no turn runs after terminate")

		// After the turn: the sandbox goes away, the record stays.
		id3 := n.session(agent, "ok")
		n.waitDone(id3, time.Minute)
		h3 := n.handle(id3)
		n.mustCreate("/sessions/"+id3+"/terminate", nil, 200)
		waitGone(t, n, h3)
		evs = n.waitDone(id3, time.Minute)
		require.Equal(t, "terminated", evs[len(evs)-1].typ())
	})
}

func TestTurnTimeout(t *testing.T) {
	t.Parallel()
	for _, b := range []backendKind{backendLocal, backendFake} {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: b})
			id := n.session(n.agent(nil), "sleep:300", "timeout", 10)
			evs := n.waitDone(id, 2*time.Minute)
			last := evs[len(evs)-1]
			require.Equal(t, "error", last.typ(), "a timeout fails with a null exit code")
			require.Equal(t, "Session failed", last.data["message"])
			require.Contains(t, outputText(evs, "stderr"), "timed out after 10s")
			s := n.do("GET", "/sessions/"+id, nil).obj(t)
			require.Equal(t, "failed", s["status"])
			require.Nil(t, s["exit_code"])
			// The process is gone: nothing named sleep runs in the sandbox.
			out, _ := n.sandboxExec(n.handle(id), "ps -eo args | grep -c '^sleep' || true")
			require.Equal(t, "0", strings.TrimSpace(out))
		})
	}
}

func TestProvisionFailure(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, n *node) {
		env := n.mustCreate("/environments", map[string]any{"name": "bad", "setup_script": "echo broken >&2; exit 1"}, 201)["id"].(string)
		id := n.session(n.agent(nil), "p", "environment_id", env)
		h := n.handle(id)
		evs := n.waitDone(id, time.Minute)
		var failed map[string]any
		for _, e := range evs {
			if e.typ() == "stage" && e.data["state"] == "failed" {
				failed = e.data
			}
		}
		require.NotNil(t, failed)
		require.Equal(t, "provision_setup", failed["stage"])
		require.Equal(t, "Provisioning script failed: exit 1\nstderr:\nbroken\n", failed["message"])
		require.Contains(t, outputText(evs, "stderr"), "provision failed: Provisioning script failed: exit 1")
		require.Equal(t, "error", evs[len(evs)-1].typ())
		waitGone(t, n, h)
		sess, err := n.app.DB().SessionGet(context.Background(), 0, id)
		require.NoError(t, err)
		require.Equal(t, "failed", sess.Status)
		require.Empty(t, sess.BackendHandle)
	})
}

func TestLimitedNetwork(t *testing.T) {
	t.Parallel()
	for _, b := range []backendKind{backendLocal, backendFake} {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: b})
			env := n.mustCreate("/environments", map[string]any{"name": "ltd",
				"networking": map[string]any{"type": "limited", "allowed_hosts": []any{"registry.npmjs.org", "github.com"}}}, 201)["id"].(string)
			id := n.session(n.agent(nil), "p", "environment_id", env)
			evs := n.waitDone(id, time.Minute)
			// Both backends apply the allow-list (the local backend used to
			// fail the stage, D3; issue 10 enforces it with its egress proxy).
			require.Equal(t, "exit", evs[len(evs)-1].typ(), outputText(evs, "stderr"))
			require.Contains(t, stages(evs), "network_policy:done")
			want := []sprites.Rule{{Domain: "registry.npmjs.org", Action: "allow"}, {Domain: "github.com", Action: "allow"},
				{Domain: "*", Action: "deny"}}
			if b == backendLocal {
				p, err := n.backend.(*local.Backend).Runner().Policy(n.handle(id))
				require.NoError(t, err)
				require.Equal(t, want, p.Rules)
				return
			}
			policies := n.fake.Policies(n.handle(id))
			require.NotEmpty(t, policies)
			require.Equal(t, want, policies[len(policies)-1].Rules)
		})
	}
}

func TestBackpressureKeepsEveryByte(t *testing.T) {
	t.Parallel()
	lines := 20 << 20 / 9 // ~20 MiB of "%08d\n"; 200 MiB at full scale (D22)
	if fullScale() {
		lines *= 10
	}
	for _, b := range []backendKind{backendLocal, backendFake} {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: migrations.Postgres, backend: b})
			id := n.session(n.agent(nil), fmt.Sprintf("flood:%d", lines), "timeout", 600)
			evs := n.waitDone(id, 5*time.Minute)
			require.Equal(t, "exit", evs[len(evs)-1].typ())
			var want strings.Builder
			for i := 1; i <= lines; i++ {
				fmt.Fprintf(&want, "%08d\n", i)
			}
			out := outputText(evs, "stdout")
			start := strings.Index(out, "00000001\n")
			require.GreaterOrEqual(t, start, 0)
			got := out[start : start+want.Len()]
			require.Equal(t, sha256.Sum256([]byte(want.String())), sha256.Sum256([]byte(got)), "every byte, in order")
		})
	}
}

func TestRuntimeConfigFiles(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendFake})
	mcp := []any{map[string]any{"name": "docs", "url": "https://mcp.example/docs", "headers": map[string]any{"Authorization": "Bearer ${DOCS_TOKEN}"}}}
	tests := []struct {
		provider, runtime, model string
		files                    map[string]string // path → mode
		argv                     string
	}{
		{"openai", "", "gpt-5", map[string]string{"/home/sprite/.codex/config.toml": "644", "/home/sprite/.codex/auth.json": "600"}, "argv: exec -m gpt-5 --dangerously-bypass-approvals-and-sandbox --json"},
		{"google", "", "gemini-2.5-pro", map[string]string{"/home/sprite/.gemini/settings.json": "644"}, "argv: -m gemini-2.5-pro --output-format stream-json"},
		{"anthropic", "opencode", "claude-sonnet-4", map[string]string{"/home/sprite/.config/opencode/opencode.json": "644"}, "argv: run --model anthropic/claude-sonnet-4 --format json"},
	}
	for _, tt := range tests {
		body := map[string]any{"provider": tt.provider, "model": tt.model, "mcp_servers": mcp}
		if tt.runtime != "" {
			body["runtime"] = tt.runtime
		}
		id := n.session(n.agent(body), "hi", "secret_env_vars", map[string]any{"OPENAI_API_KEY": "sk-test"})
		evs := n.waitDone(id, time.Minute)
		require.Equal(t, "exit", evs[len(evs)-1].typ(), outputText(evs, "stderr"))
		require.Contains(t, outputText(evs, "stdout"), tt.argv)
		for path, mode := range tt.files {
			_, got := n.sandboxRead(n.handle(id), path)
			require.Equal(t, mode, got, path)
		}
		if tt.provider == "openai" {
			auth, _ := n.sandboxRead(n.handle(id), "/home/sprite/.codex/auth.json")
			require.Equal(t, "{\"OPENAI_API_KEY\": \"sk-test\"}\n", auth)
			toml, _ := n.sandboxRead(n.handle(id), "/home/sprite/.codex/config.toml")
			require.Contains(t, toml, "[mcp_servers.docs]\nurl = \"https://mcp.example/docs\"\nbearer_token_env_var = \"DOCS_TOKEN\"\n")
		}
	}
}

func waitStatus(t *testing.T, n *node, id, status string) {
	t.Helper()
	// The condition runs on its own goroutine: it must not assert.
	require.Eventually(t, func() bool {
		s, err := n.app.DB().SessionGet(context.Background(), 0, id)
		return err == nil && s.Status == status
	}, time.Minute, 20*time.Millisecond, "session never became %s", status)
}

func waitOutput(t *testing.T, n *node, id, text string) {
	t.Helper()
	require.Eventually(t, func() bool {
		evs, err := n.app.DB().EventsAfter(context.Background(), id, 0, 10000)
		if err != nil {
			return false
		}
		for _, e := range evs {
			if strings.Contains(e.Data, text) {
				return true
			}
		}
		return false
	}, time.Minute, 20*time.Millisecond, "no output %q", text)
}

func waitStage(t *testing.T, n *node, id, stage, state string) {
	t.Helper()
	require.Eventually(t, func() bool {
		evs, err := n.app.DB().EventsAfter(context.Background(), id, 0, 10000)
		if err != nil {
			return false
		}
		for _, e := range evs {
			if e.Stage == stage && e.State == state {
				return true
			}
		}
		return false
	}, time.Minute, 20*time.Millisecond, "no stage %s %s", stage, state)
}

func waitGone(t *testing.T, n *node, handle string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := n.backend.Get(context.Background(), handle)
		return err != nil
	}, time.Minute, 20*time.Millisecond, "sandbox %s still exists", handle)
}

func newUserKey(t *testing.T, n *node) (int64, string) {
	t.Helper()
	u, err := n.app.DB().UserCreate(context.Background(), "other-"+fmt.Sprint(time.Now().UnixNano()))
	require.NoError(t, err)
	key, _, err := n.app.DB().APIKeyCreate(context.Background(), &persistence.APIKeyCreateParams{UserID: u.ID})
	require.NoError(t, err)
	return u.ID, key
}

// panickyBackend panics when a turn starts its exec.
type panickyBackend struct{ sprites.Backend }

func (p *panickyBackend) Exec(ctx context.Context, name string, req sprites.ExecRequest) (sprites.Exec, error) {
	if len(req.Argv) > 4 && req.Argv[4] == "claude" && len(req.Argv) > 5 && req.Argv[5] != "update" {
		panic("backend bug")
	}
	return p.Backend.Exec(ctx, name, req)
}

// TestPanicFailsTheSessionNotTheProcess: a panic in a session's work is
// recovered; the session and its turn fail in the database, the node keeps
// serving.
func TestPanicFailsTheSessionNotTheProcess(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendFake, wrap: func(b sprites.Backend) sprites.Backend {
		return &panickyBackend{Backend: b}
	}})
	id := n.session(n.agent(nil), "hi")
	evs := n.waitDone(id, time.Minute)
	require.Equal(t, "error", evs[len(evs)-1].typ())
	require.Contains(t, outputText(evs, "stderr"), "internal error")
	s := n.do("GET", "/sessions/"+id, nil).obj(t)
	require.Equal(t, "failed", s["status"])
	turns := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
	require.Equal(t, "failed", turns[0].(map[string]any)["status"])
	require.Equal(t, 200, n.do("GET", "/health", nil).status, "the node still serves")
	require.Contains(t, n.logs.String(), "session work panicked")
}

// fullScale reports AOD_BENCH_SCALE=full (make bench): the heaviest tests
// run at the full scale (D22).
func fullScale() bool { return os.Getenv("AOD_BENCH_SCALE") == "full" }
