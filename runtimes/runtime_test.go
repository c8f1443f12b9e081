package runtimes

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRuntime(t *testing.T) {
	t.Parallel()

	t.Run("ForProvider", func(t *testing.T) {
		t.Parallel()
		for provider, want := range map[string]Runtime{"anthropic": Claude, "openai": Codex, "google": Gemini} {
			got, ok := ForProvider(provider)
			require.True(t, ok, provider)
			require.Equal(t, want, got)
		}
		for _, p := range []string{"", "Anthropic", "mistral"} {
			_, ok := ForProvider(p)
			require.False(t, ok, p)
		}
	})

	t.Run("InstallCommand", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"bash", "-lc", "claude update"}, InstallCommand(Claude))
		require.Equal(t, []string{"bash", "-lc", "npm install -g opencode-ai@1.18.33"}, InstallCommand(OpenCode))
		require.Nil(t, InstallCommand(Codex))
		require.Nil(t, InstallCommand(Gemini))
		require.Nil(t, InstallCommand("nope"))
	})

	t.Run("Parse", func(t *testing.T) {
		t.Parallel()
		for _, r := range All() {
			got, ok := Parse(string(r))
			require.True(t, ok)
			require.Equal(t, r, got)
			require.True(t, r.Valid())
			require.Equal(t, string(r), r.String())
		}
		require.Equal(t, []Runtime{"claude", "codex", "gemini", "opencode"}, All())
		for _, s := range []string{"", "Claude", "goose", "claude "} {
			_, ok := Parse(s)
			require.False(t, ok, s)
			require.False(t, Runtime(s).Valid())
		}
	})

	t.Run("ParseMode", func(t *testing.T) {
		t.Parallel()
		m, ok := ParseMode("run")
		require.True(t, ok)
		require.Equal(t, Run, m)
		m, ok = ParseMode("continue")
		require.True(t, ok)
		require.Equal(t, Continue, m)
		_, ok = ParseMode("resume")
		require.False(t, ok)
	})

	t.Run("Serves", func(t *testing.T) {
		t.Parallel()
		require.True(t, Claude.Serves("anthropic"))
		require.False(t, Claude.Serves("openai"))
		require.True(t, Codex.Serves("openai"))
		require.False(t, Codex.Serves("google"))
		require.True(t, Gemini.Serves("google"))
		require.False(t, Gemini.Serves("anthropic"))
		for _, p := range []string{"anthropic", "openai", "google"} {
			require.True(t, OpenCode.Serves(p), p)
		}
		require.False(t, OpenCode.Serves("mistral"))
	})

	t.Run("Skills", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			r           Runtime
			root, agent string
		}{
			{Claude, "/home/sprite/.claude/skills", "claude-code"},
			{Codex, "/home/sprite/.codex/skills", "codex"},
			{Gemini, "/home/sprite/.gemini/skills", "gemini-cli"},
			{OpenCode, "/home/sprite/.config/opencode/skills", "opencode"},
			{"nope", "", ""},
		}
		for _, c := range cases {
			require.Equal(t, c.root, SkillsRoot(c.r), c.r)
			require.Equal(t, c.agent, SkillsAgent(c.r), c.r)
		}
	})
}
