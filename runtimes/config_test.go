package runtimes

import (
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigFiles(t *testing.T) {
	t.Parallel()

	t.Run("JSONRuntimes", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			r      Runtime
			path   string
			golden string
		}{
			{Claude, "/home/sprite/.claude.json", claudeGolden},
			{Gemini, "/home/sprite/.gemini/settings.json", geminiGolden},
			{OpenCode, "/home/sprite/.config/opencode/opencode.json", openCodeGolden},
		}
		for _, c := range cases {
			files, err := ConfigFiles(c.r, testServers(), map[string]string{"OPENAI_API_KEY": "sk"}, nil)
			require.NoError(t, err)
			require.Equal(t, []File{{Path: c.path, Data: []byte(c.golden), Mode: 0o644}}, files, c.r)
		}
	})

	t.Run("NothingRenders", func(t *testing.T) {
		t.Parallel()
		for _, r := range All() {
			for _, servers := range [][]any{nil, {map[string]any{"name": "g", "type": "grpc"}}, {"not an object"}} {
				files, err := ConfigFiles(r, servers, nil, nil)
				require.NoError(t, err)
				require.Empty(t, files, r)
			}
		}
	})

	t.Run("DefaultsAndDuplicates", func(t *testing.T) {
		t.Parallel()
		// A bare name is a url server with url ""; a later entry with the
		// same name replaces the earlier one in place; a null type is unknown.
		files, err := ConfigFiles(Claude, []any{
			map[string]any{"name": "a"},
			map[string]any{"name": "b", "type": nil},
			map[string]any{"name": "c", "type": "stdio", "command": "x", "args": []any{}, "env": map[string]any{}},
			map[string]any{"name": "a", "type": "stdio", "command": "y"},
		}, nil, nil)
		require.NoError(t, err)
		require.Len(t, files, 1)
		require.Equal(t, `{
  "mcpServers": {
    "a": {
      "type": "stdio",
      "command": "y",
      "args": []
    },
    "c": {
      "type": "stdio",
      "command": "x",
      "args": []
    }
  }
}`, string(files[0].Data))

		files, err = ConfigFiles(Gemini, []any{map[string]any{"name": "a"}}, nil, nil)
		require.NoError(t, err)
		require.Equal(t, "{\n  \"mcpServers\": {\n    \"a\": {\n      \"httpUrl\": \"\",\n      \"trust\": true\n    }\n  }\n}", string(files[0].Data))
	})

	t.Run("CodexTOML", func(t *testing.T) {
		t.Parallel()
		files, err := ConfigFiles(Codex, []any{
			map[string]any{"name": "docs", "url": "https://mcp.example.com/mcp?q=\"x\"", "headers": map[string]any{"authorization": "Bearer ${DOCS_TOKEN}"}},
			map[string]any{"name": "plain", "type": "url", "url": "https://x.example/mcp", "headers": map[string]any{}},
			map[string]any{"name": "fs", "type": "stdio", "command": `C:\bin\mcp`, "args": []any{"-y", "say \"hi\"\n", "tab\there"},
				"env": map[string]any{"ROOT": "/home/sprite", "A B": "ctl\x01\x7f", "UNICODE": "café"}},
			map[string]any{"name": "bare", "type": "stdio", "command": "mcp-bare"},
			map[string]any{"name": "grpc", "type": "grpc", "headers": map[string]any{"X": "y"}},
			map[string]any{"name": "my.server", "type": "stdio", "command": "x"},
		}, nil, nil)
		require.NoError(t, err)
		want := `[mcp_servers.docs]
url = "https://mcp.example.com/mcp?q=\"x\""
bearer_token_env_var = "DOCS_TOKEN"
required = true

[mcp_servers.plain]
url = "https://x.example/mcp"
required = true

[mcp_servers.fs]
command = "C:\\bin\\mcp"
args = ["-y", "say \"hi\"\n", "tab\there"]
[mcp_servers.fs.env]
"A B" = "ctl\u0001\u007F"
ROOT = "/home/sprite"
UNICODE = "café"

[mcp_servers.bare]
command = "mcp-bare"

[mcp_servers."my.server"]
command = "x"
`
		require.Equal(t, []File{{Path: "/home/sprite/.codex/config.toml", Data: []byte(want), Mode: 0o644}}, files)
	})

	t.Run("CodexBearerHeader", func(t *testing.T) {
		t.Parallel()
		for _, h := range []map[string]any{
			{"Authorization": "Bearer ${TOKEN}"},
			{"AUTHORIZATION": "Bearer ${TOKEN}"},
			{"authorization": "Bearer   ${TOKEN}  "},
		} {
			files, err := ConfigFiles(Codex, []any{map[string]any{"name": "s", "url": "https://x", "headers": h}}, nil, nil)
			require.NoError(t, err)
			require.Equal(t, "[mcp_servers.s]\nurl = \"https://x\"\nbearer_token_env_var = \"TOKEN\"\nrequired = true\n", string(files[0].Data))
		}
	})

	t.Run("CodexRejectedHeaders", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name    string
			headers map[string]any
			msg     string
		}{
			{"LiteralBearer", map[string]any{"Authorization": "Bearer sk-live-123"},
				"MCP server 's': Codex only supports env-var Bearer tokens (e.g. 'Bearer ${MY_TOKEN}'); got a literal value"},
			{"EmptyVar", map[string]any{"Authorization": "Bearer ${}"},
				"MCP server 's': Codex only supports env-var Bearer tokens (e.g. 'Bearer ${MY_TOKEN}'); got a literal value"},
			{"HalfReference", map[string]any{"Authorization": "Bearer ${TOKEN"},
				"MCP server 's': Codex only supports env-var Bearer tokens (e.g. 'Bearer ${MY_TOKEN}'); got a literal value"},
			{"OtherHeader", map[string]any{"X-Api-Key": "${KEY}"},
				"MCP server 's': Codex config does not support header 'X-Api-Key'; only 'Authorization: Bearer ${ENV_VAR}' is supported"},
			{"OtherHeaderBesideBearer", map[string]any{"Authorization": "Bearer ${T}", "X-Trace": "1"},
				"MCP server 's': Codex config does not support header 'X-Trace'; only 'Authorization: Bearer ${ENV_VAR}' is supported"},
			{"NonBearerScheme", map[string]any{"Authorization": "Basic abc"},
				"MCP server 's': Codex config does not support header 'Authorization'; only 'Authorization: Bearer ${ENV_VAR}' is supported"},
			{"TwoAuthorizations", map[string]any{"Authorization": "Bearer ${A}", "authorization": "Bearer ${B}"},
				"MCP server 's': Codex config supports only one Authorization header"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				files, err := ConfigFiles(Codex, []any{
					map[string]any{"name": "ok", "type": "stdio", "command": "x"},
					map[string]any{"name": "s", "url": "https://x", "headers": c.headers},
				}, map[string]string{"OPENAI_API_KEY": "sk"}, nil)
				require.Nil(t, files)
				require.ErrorIs(t, err, ErrUnsupportedMCPHeader)
				require.Equal(t, c.msg, err.Error())
				require.Equal(t, "Failed to write runtime config: "+err.Error(), RuntimeConfigFailed(err))
			})
		}
	})

	t.Run("CodexHeadersIgnoredByOtherRuntimes", func(t *testing.T) {
		t.Parallel()
		for _, r := range []Runtime{Claude, Gemini, OpenCode} {
			_, err := ConfigFiles(r, []any{map[string]any{"name": "s", "url": "u", "headers": map[string]any{"X": "literal"}}}, nil, nil)
			require.NoError(t, err)
		}
	})

	t.Run("CodexAuth", func(t *testing.T) {
		t.Parallel()
		auth := func(key string) File {
			return File{Path: "/home/sprite/.codex/auth.json", Data: []byte(`{"OPENAI_API_KEY": "` + key + `"}` + "\n"), Mode: 0o600}
		}
		cases := []struct {
			name        string
			secret, env map[string]string
			want        []File
		}{
			{"SecretWins", map[string]string{"OPENAI_API_KEY": "sk-secret"}, map[string]string{"OPENAI_API_KEY": "sk-env"}, []File{auth("sk-secret")}},
			{"EnvFallback", map[string]string{"OTHER": "x"}, map[string]string{"OPENAI_API_KEY": "sk-env"}, []File{auth("sk-env")}},
			{"EmptySecretFallsBack", map[string]string{"OPENAI_API_KEY": ""}, map[string]string{"OPENAI_API_KEY": "sk-env"}, []File{auth("sk-env")}},
			{"Escaped", map[string]string{"OPENAI_API_KEY": "sk-é\"x"}, nil, []File{auth(`sk-\u00e9\"x`)}},
			{"None", nil, map[string]string{"OPENAI_API_KEY": ""}, nil},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				files, err := ConfigFiles(Codex, nil, c.secret, c.env)
				require.NoError(t, err)
				require.Equal(t, c.want, files)
			})
		}

		// auth.json comes before config.toml; other runtimes never write it.
		files, err := ConfigFiles(Codex, []any{map[string]any{"name": "b", "type": "stdio", "command": "x"}}, map[string]string{"OPENAI_API_KEY": "k"}, nil)
		require.NoError(t, err)
		require.Len(t, files, 2)
		require.Equal(t, "/home/sprite/.codex/auth.json", files[0].Path)
		require.Equal(t, fs.FileMode(0o600), files[0].Mode)
		require.Equal(t, "/home/sprite/.codex/config.toml", files[1].Path)
		files, err = ConfigFiles(Claude, nil, map[string]string{"OPENAI_API_KEY": "k"}, nil)
		require.NoError(t, err)
		require.Empty(t, files)
	})

	t.Run("UnknownRuntime", func(t *testing.T) {
		t.Parallel()
		files, err := ConfigFiles("goose", testServers(), nil, nil)
		require.NoError(t, err)
		require.Nil(t, files)
	})
}

// testServers are decoded mcp_servers entries: a url server without a type
// and with headers, a stdio server with args and env, a url server without
// headers, a stdio server with neither args nor env, and an unknown type.
func testServers() []any {
	return []any{
		map[string]any{"name": "docs", "url": "https://mcp.example.com/mcp", "headers": map[string]any{
			"X-Name": "caf\u00e9 <&>", "Authorization": "Bearer ${DOCS_TOKEN}"}},
		map[string]any{"name": "fs", "type": "stdio", "command": "npx", "args": []any{"-y", "@mcp/fs", "/home/sprite"},
			"env": map[string]any{"ROOT": "/home/sprite", "DEBUG": "1"}},
		map[string]any{"name": "plain", "type": "url", "url": "https://x.example/mcp"},
		map[string]any{"name": "bare", "type": "stdio", "command": "mcp-bare"},
		map[string]any{"name": "grpc", "type": "grpc", "url": "grpc://x"},
	}
}

// The goldens below are Python's json.dumps(..., indent=2) of the reference
// renderers' output for testServers (headers and env keys sorted).
const (
	claudeGolden = `{
  "mcpServers": {
    "docs": {
      "type": "http",
      "url": "https://mcp.example.com/mcp",
      "headers": {
        "Authorization": "Bearer ${DOCS_TOKEN}",
        "X-Name": "caf\u00e9 <&>"
      }
    },
    "fs": {
      "type": "stdio",
      "command": "npx",
      "args": [
        "-y",
        "@mcp/fs",
        "/home/sprite"
      ],
      "env": {
        "DEBUG": "1",
        "ROOT": "/home/sprite"
      }
    },
    "plain": {
      "type": "http",
      "url": "https://x.example/mcp"
    },
    "bare": {
      "type": "stdio",
      "command": "mcp-bare",
      "args": []
    }
  }
}`
	geminiGolden = `{
  "mcpServers": {
    "docs": {
      "httpUrl": "https://mcp.example.com/mcp",
      "trust": true,
      "headers": {
        "Authorization": "Bearer ${DOCS_TOKEN}",
        "X-Name": "caf\u00e9 <&>"
      }
    },
    "fs": {
      "command": "npx",
      "args": [
        "-y",
        "@mcp/fs",
        "/home/sprite"
      ],
      "trust": true,
      "env": {
        "DEBUG": "1",
        "ROOT": "/home/sprite"
      }
    },
    "plain": {
      "httpUrl": "https://x.example/mcp",
      "trust": true
    },
    "bare": {
      "command": "mcp-bare",
      "args": [],
      "trust": true
    }
  }
}`
	openCodeGolden = `{
  "mcp": {
    "docs": {
      "type": "remote",
      "url": "https://mcp.example.com/mcp",
      "enabled": true,
      "headers": {
        "Authorization": "Bearer ${DOCS_TOKEN}",
        "X-Name": "caf\u00e9 <&>"
      }
    },
    "fs": {
      "type": "local",
      "command": [
        "npx",
        "-y",
        "@mcp/fs",
        "/home/sprite"
      ],
      "enabled": true,
      "environment": {
        "DEBUG": "1",
        "ROOT": "/home/sprite"
      }
    },
    "plain": {
      "type": "remote",
      "url": "https://x.example/mcp",
      "enabled": true
    },
    "bare": {
      "type": "local",
      "command": [
        "mcp-bare"
      ],
      "enabled": true
    }
  }
}`
)

func TestCodexTOMLValues(t *testing.T) {
	t.Parallel()

	// Non-string JSON values are written as their JSON text; names are
	// quoted in messages like Python's repr.
	files, err := ConfigFiles(Codex, []any{
		map[string]any{"name": "n", "type": "stdio", "command": "x", "args": []any{8080.0, true},
			"env": map[string]any{"PORT": 8080.0, "NIL": nil}},
	}, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "[mcp_servers.n]\ncommand = \"x\"\nargs = [\"8080\", \"true\"]\n[mcp_servers.n.env]\nNIL = \"\"\nPORT = \"8080\"\n", string(files[0].Data))

	_, err = ConfigFiles(Codex, []any{map[string]any{"name": "it's", "url": "u", "headers": map[string]any{"X": "1"}}}, nil, nil)
	require.ErrorContains(t, err, `MCP server "it's": `)
	require.Equal(t, `'a\'b"c'`, pyRepr(`a'b"c`))
}
