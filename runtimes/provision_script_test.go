package runtimes

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProvisionScript(t *testing.T) {
	t.Parallel()

	t.Run("Full", func(t *testing.T) {
		t.Parallel()
		got := ProvisionScript(ProvisionParams{
			Runtime:    Gemini,
			MCPServers: []any{map[string]any{"name": "docs", "url": "https://x"}},
			Skills: []any{
				map[string]any{"name": "review", "description": "d", "content": "# Review"},
				map[string]any{"type": "github", "description": "d", "source": "acme/skills", "name": "lint"},
				map[string]any{"name": "a-first", "description": "d", "content": "x"},
			},
			Packages: map[string][]string{
				"pip":    {"requests==2.32.0", "rich"},
				"npm":    {"typescript", "@scope/pkg@1.2.3"},
				"go":     {"golang.org/x/tools/gopls@latest", "example.com/cmd@v1"},
				"gem":    {"bundler", "rails"},
				"cargo":  {"ripgrep", "fd-find"},
				"apt":    {"libpq-dev", "jq"},
				"brew":   {"ignored"},
				"conda":  nil,
				"unused": {},
			},
			Repos: []Repo{
				{URL: "https://github.com/acme/api", MountPath: "/workspace/api", Token: "ghp_secret"},
				{URL: "https://github.com/acme/web", MountPath: "/workspace/my web"},
			},
			SetupScript: "\n  echo 'ready' > /tmp/ready\nmake setup\n\n",
		})
		want := `#!/bin/bash
set -e

mkdir -p /home/sprite/.gemini /home/sprite/.gemini/skills/a-first /home/sprite/.gemini/skills/review

chmod 600 /tmp/aod-env
chmod 600 /tmp/.git-credentials

apt-get update -qq && apt-get install -y libpq-dev jq
cargo install ripgrep
cargo install fd-find
gem install bundler rails
go install golang.org/x/tools/gopls@latest
go install example.com/cmd@v1
npm install --global typescript @scope/pkg@1.2.3
pip install requests==2.32.0 rich

git config --global credential.helper 'store --file=/tmp/.git-credentials'
git clone --depth=1 --quiet https://github.com/acme/api /workspace/api
git clone --depth=1 --quiet https://github.com/acme/web '/workspace/my web'

echo 'ready' > /tmp/ready
make setup
`
		require.Equal(t, want, string(got))
	})

	t.Run("Minimal", func(t *testing.T) {
		t.Parallel()
		got := ProvisionScript(ProvisionParams{Runtime: Claude, SetupScript: "  \n\t"})
		require.Equal(t, "#!/bin/bash\nset -e\n\nchmod 600 /tmp/aod-env\n", string(got))
	})

	t.Run("CodexAlwaysMakesHome", func(t *testing.T) {
		t.Parallel()
		got := ProvisionScript(ProvisionParams{Runtime: Codex})
		require.Equal(t, "#!/bin/bash\nset -e\n\nmkdir -p /home/sprite/.codex\n\nchmod 600 /tmp/aod-env\n", string(got))
	})

	t.Run("ConfigDirOnlyWithMCPServers", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			r   Runtime
			dir string
		}{{Gemini, "/home/sprite/.gemini"}, {OpenCode, "/home/sprite/.config/opencode"}} {
			require.NotContains(t, string(ProvisionScript(ProvisionParams{Runtime: c.r})), "mkdir")
			got := ProvisionScript(ProvisionParams{Runtime: c.r, MCPServers: []any{map[string]any{"name": "x"}}})
			require.Contains(t, string(got), "\nmkdir -p "+c.dir+"\n")
		}
		// Claude's config file is in the home directory, which exists.
		got := ProvisionScript(ProvisionParams{Runtime: Claude, MCPServers: []any{map[string]any{"name": "x"}}})
		require.NotContains(t, string(got), "mkdir")
	})

	t.Run("ReposWithoutTokens", func(t *testing.T) {
		t.Parallel()
		got := ProvisionScript(ProvisionParams{
			Runtime: OpenCode,
			Repos:   []Repo{{URL: "https://github.com/acme/api", MountPath: "/workspace/api"}},
			Skills:  []any{map[string]any{"name": "s", "content": "c"}},
		})
		want := "#!/bin/bash\nset -e\n\n" +
			"mkdir -p /home/sprite/.config/opencode/skills/s\n\n" +
			"chmod 600 /tmp/aod-env\n\n" +
			"git clone --depth=1 --quiet https://github.com/acme/api /workspace/api\n"
		require.Equal(t, want, string(got))
	})

	t.Run("QuotesEverything", func(t *testing.T) {
		t.Parallel()
		got := string(ProvisionScript(ProvisionParams{
			Runtime:  Claude,
			Packages: map[string][]string{"apt": {"jq; rm -rf /"}, "cargo": {"$(id)"}},
			Repos:    []Repo{{URL: "https://github.com/a/b", MountPath: "/workspace/it's"}},
		}))
		require.Contains(t, got, "apt-get install -y 'jq; rm -rf /'\n")
		require.Contains(t, got, "cargo install '$(id)'\n")
		require.Contains(t, got, ` '/workspace/it'"'"'s'`+"\n")
	})
}
