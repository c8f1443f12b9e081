package runtimes

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestArgv(t *testing.T) {
	t.Parallel()

	const sid = "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"
	shim := []string{"bash", "-lc", `set -a; source /tmp/aod-env; set +a; exec "$@"`, "--"}
	cases := []struct {
		name string
		spec TurnSpec
		want []string
	}{
		{"ClaudeRun", TurnSpec{Runtime: Claude, Provider: "anthropic", Model: "claude-sonnet-4-5", RuntimeSessionID: sid, Mode: Run},
			[]string{"claude", "--dangerously-skip-permissions", "--print", "--verbose", "--output-format", "stream-json", "--model", "claude-sonnet-4-5", "--session-id", sid}},
		{"ClaudeContinue", TurnSpec{Runtime: Claude, Provider: "anthropic", Model: "claude-sonnet-4-5", RuntimeSessionID: sid, Mode: Continue},
			[]string{"claude", "--dangerously-skip-permissions", "--print", "--verbose", "--output-format", "stream-json", "--model", "claude-sonnet-4-5", "--resume", sid}},
		{"CodexRun", TurnSpec{Runtime: Codex, Provider: "openai", Model: "gpt-5-codex", RuntimeSessionID: sid, Mode: Run},
			[]string{"codex", "exec", "-m", "gpt-5-codex", "--dangerously-bypass-approvals-and-sandbox", "--json"}},
		{"CodexContinue", TurnSpec{Runtime: Codex, Provider: "openai", Model: "gpt-5-codex", RuntimeSessionID: sid, Mode: Continue},
			[]string{"codex", "exec", "resume", "--last", "-m", "gpt-5-codex", "--dangerously-bypass-approvals-and-sandbox", "--json"}},
		{"GeminiRun", TurnSpec{Runtime: Gemini, Provider: "google", Model: "gemini-2.5-pro", RuntimeSessionID: sid, Mode: Run},
			[]string{"gemini", "-m", "gemini-2.5-pro", "--output-format", "stream-json"}},
		{"GeminiContinue", TurnSpec{Runtime: Gemini, Provider: "google", Model: "gemini-2.5-pro", RuntimeSessionID: sid, Mode: Continue},
			[]string{"gemini", "-m", "gemini-2.5-pro", "--resume", "--output-format", "stream-json"}},
		{"OpenCodeRun", TurnSpec{Runtime: OpenCode, Provider: "anthropic", Model: "claude-sonnet-4-5", RuntimeSessionID: sid, Mode: Run},
			[]string{"opencode", "run", "--model", "anthropic/claude-sonnet-4-5", "--format", "json"}},
		{"OpenCodeContinue", TurnSpec{Runtime: OpenCode, Provider: "openai", Model: "gpt-5", RuntimeSessionID: sid, Mode: Continue},
			[]string{"opencode", "run", "--model", "openai/gpt-5", "--format", "json", "--continue"}},
		{"OpenCodeNoProvider", TurnSpec{Runtime: OpenCode, Model: "google/gemini-2.5-pro", Mode: Run},
			[]string{"opencode", "run", "--model", "google/gemini-2.5-pro", "--format", "json"}},
		{"EmptyModeIsRun", TurnSpec{Runtime: Codex, Model: "m"},
			[]string{"codex", "exec", "-m", "m", "--dangerously-bypass-approvals-and-sandbox", "--json"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, append(append([]string{}, shim...), c.want...), Argv(c.spec))
		})
	}

	t.Run("UnknownRuntime", func(t *testing.T) {
		t.Parallel()
		require.Nil(t, Argv(TurnSpec{Runtime: "goose", Model: "m"}))
	})

	t.Run("ProvisionArgv", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"bash", "-l", "/tmp/aod-provision.sh"}, ProvisionArgv())
		require.Equal(t, "/home/sprite", WorkDir)
	})
}
