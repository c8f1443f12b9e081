package runtimes

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func testSkills() []any {
	return []any{
		map[string]any{"name": "review", "description": "Reviews code", "content": "---\nname: review\n---\n# Review\nBe kind.\n"},
		map[string]any{"type": "github", "description": "All of them", "source": "acme/skills"},
		map[string]any{"type": "github", "name": "lint", "description": "One", "source": "acme/more.skills"},
		map[string]any{"name": "empty", "description": "d", "content": ""},
		map[string]any{"type": "github", "name": "bad", "description": "no source"},
		map[string]any{"name": "nocontent", "description": "d"},
		"not an object",
	}
}

func TestInlineSkillFiles(t *testing.T) {
	t.Parallel()

	require.Equal(t, []File{
		{Path: "/home/sprite/.codex/skills/review/SKILL.md", Data: []byte("---\nname: review\n---\n# Review\nBe kind.\n"), Mode: 0o644},
		{Path: "/home/sprite/.codex/skills/empty/SKILL.md", Data: []byte(""), Mode: 0o644},
	}, InlineSkillFiles(Codex, testSkills()))
	for _, r := range All() {
		files := InlineSkillFiles(r, testSkills())
		require.Len(t, files, 2)
		require.Equal(t, SkillsRoot(r)+"/review/SKILL.md", files[0].Path)
	}
	require.Nil(t, InlineSkillFiles("goose", testSkills()))
	require.Nil(t, InlineSkillFiles(Claude, nil))
}

func TestGitHubSkillCommands(t *testing.T) {
	t.Parallel()

	require.Equal(t, [][]string{
		{"bash", "-lc", "npx -y skills@latest add acme/skills --global --agent gemini-cli --yes"},
		{"bash", "-lc", "npx -y skills@latest add acme/more.skills --global --agent gemini-cli --yes --skill lint"},
	}, GitHubSkillCommands(Gemini, testSkills()))

	got := GitHubSkillCommands(Claude, []any{
		map[string]any{"type": "github", "name": "it's", "source": "a/b; rm -rf /"},
	})
	require.Equal(t, [][]string{{"bash", "-lc",
		`npx -y skills@latest add 'a/b; rm -rf /' --global --agent claude-code --yes --skill 'it'"'"'s'`}}, got)

	require.Nil(t, GitHubSkillCommands("goose", testSkills()))
	require.Nil(t, GitHubSkillCommands(OpenCode, []any{map[string]any{"name": "x", "content": "y"}}))
}
