package schema

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateSkills(t *testing.T) {
	t.Parallel()

	inline := func(name string) string {
		return fmt.Sprintf(`{"name": %q, "description": "d", "content": "c"}`, name)
	}
	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = inline(fmt.Sprintf("s%d", i))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}

	ok := []struct{ name, in string }{
		{"Empty", `[]`},
		{"Inline", `[` + inline("a") + `]`},
		{"GitHubWithName", `[{"type": "github", "name": "pdf", "description": "d", "source": "anthropics/skills"}]`},
		{"GitHubWholeRepo", `[{"type": "github", "description": "d", "source": "anthropics/skills"}]`},
		{"GitHubWholeRepoAndNamedFromSameSource", `[{"type": "github", "description": "d", "source": "o/r"}, {"type": "github", "name": "x", "description": "d", "source": "o/r"}]`},
		{"Twenty", many(20)},
		{"NameMaxLength", `[` + inline("a"+strings.Repeat("-", 63)) + `]`},
		{"DescriptionMax", `[{"name": "a", "description": "` + strings.Repeat("é", 1024) + `", "content": "c"}]`},
		{"ContentMaxBytes", `[{"name": "a", "description": "d", "content": "` + strings.Repeat("x", 65536) + `"}]`},
		{"SourceCharset", `[{"type": "github", "description": "d", "source": "A.b_c-1/x.Y_z-2"}]`},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := value(t, tt.in)
			got, err := ValidateSkills(in)
			require.NoError(t, err)
			require.Equal(t, in, got, "echoed as submitted")
		})
	}

	bad := []struct{ name, in, msg string }{
		{"TooMany", many(21), "Maximum 20 skills per agent"},
		{"NotObject", `["x"]`, "skills[0] must be an object"},
		{"NotObjectNull", `[` + inline("a") + `, null]`, "skills[1] must be an object"},
		{"InlineUnknownKeys", `[{"name": "a", "description": "d", "content": "c", "ref": "main", "extra": 1}]`, "skills[0]: unknown keys ['extra', 'ref']. Allowed for inline skills: ['content', 'description', 'name']"},
		{"InlineMissingName", `[{"description": "d", "content": "c"}]`, "skills[0] missing required field: name"},
		{"InlineMissingDescription", `[{"name": "a", "content": "c"}]`, "skills[0] missing required field: description"},
		{"InlineMissingContent", `[{"name": "a", "description": "d"}]`, "skills[0] missing required field: content"},
		{"InlineNameNotString", `[{"name": 1, "description": "d", "content": "c"}]`, "skills[0].name must be a string"},
		{"InlineDescriptionNotString", `[{"name": "a", "description": null, "content": "c"}]`, "skills[0].description must be a string"},
		{"InlineContentNotString", `[{"name": "a", "description": "d", "content": ["c"]}]`, "skills[0].content must be a string"},
		{"ContentTooBig", `[{"name": "a", "description": "d", "content": "` + strings.Repeat("é", 32769) + `"}]`, "skills[0].content exceeds 65536 bytes"},
		{"ContentHeredoc", `[{"name": "a", "description": "d", "content": "x\nSKILL_EOF\ny"}]`, "skills[0].content must not contain 'SKILL_EOF'"},
		{"GitHubUnknownKeys", `[{"type": "github", "description": "d", "source": "o/r", "ref": "main", "content": "c"}]`, "skills[0]: unknown keys ['content', 'ref']. Allowed for github skills: ['description', 'name', 'source', 'type']"},
		{"GitHubMissingDescription", `[{"type": "github", "source": "o/r"}]`, "skills[0] missing required field: description"},
		{"GitHubMissingSource", `[{"type": "github", "description": "d"}]`, "skills[0] missing required field: source"},
		{"GitHubTypeNotString", `[{"type": null, "description": "d", "source": "o/r"}]`, "skills[0].type must be a string"},
		{"GitHubSourceNotString", `[{"type": "github", "description": "d", "source": 5}]`, "skills[0].source must be a string"},
		{"GitHubNameNotString", `[{"type": "github", "name": 5, "description": "d", "source": "o/r"}]`, "skills[0].name must be a string"},
		{"GitHubWrongType", `[{"type": "gitlab", "description": "d", "source": "o/r"}]`, "skills[0].type 'gitlab' unsupported (only 'github')"},
		{"GitHubBadSource", `[{"type": "github", "description": "d", "source": "https://github.com/o/r"}]`, "skills[0].source 'https://github.com/o/r' must be 'owner/repo'"},
		{"GitHubSourceThreeParts", `[{"type": "github", "description": "d", "source": "o/r/x"}]`, "skills[0].source 'o/r/x' must be 'owner/repo'"},
		{"GitHubSourceTrailingNewline", `[{"type": "github", "description": "d", "source": "o/r\n"}]`, `skills[0].source 'o/r\n' must be 'owner/repo'`},
		{"NameUppercase", `[` + inline("Bad") + `]`, "skills[0].name 'Bad' must match [a-z0-9][a-z0-9-]{0,63}"},
		{"NameLeadingHyphen", `[` + inline("-a") + `]`, "skills[0].name '-a' must match [a-z0-9][a-z0-9-]{0,63}"},
		{"NameEmpty", `[` + inline("") + `]`, "skills[0].name '' must match [a-z0-9][a-z0-9-]{0,63}"},
		{"NameTooLong", `[` + inline("a"+strings.Repeat("b", 64)) + `]`, "skills[0].name '" + "a" + strings.Repeat("b", 64) + "' must match [a-z0-9][a-z0-9-]{0,63}"},
		{"GitHubBadName", `[{"type": "github", "name": "a_b", "description": "d", "source": "o/r"}]`, "skills[0].name 'a_b' must match [a-z0-9][a-z0-9-]{0,63}"},
		{"DuplicateName", `[` + inline("a") + `,` + inline("b") + `,` + inline("a") + `]`, "skills[2]: duplicate name 'a'"},
		{"DuplicateNameAcrossShapes", `[` + inline("a") + `, {"type": "github", "name": "a", "description": "d", "source": "o/r"}]`, "skills[1]: duplicate name 'a'"},
		{"DuplicateSource", `[{"type": "github", "description": "d", "source": "o/r"}, {"type": "github", "description": "e", "source": "o/r"}]`, "skills[1]: duplicate source '@github:o/r'"},
		{"DescriptionTooLong", `[{"name": "a", "description": "` + strings.Repeat("d", 1025) + `", "content": "c"}]`, "skills[0].description exceeds 1024 chars"},
		{"GitHubDescriptionTooLong", `[{"type": "github", "description": "` + strings.Repeat("d", 1025) + `", "source": "o/r"}]`, "skills[0].description exceeds 1024 chars"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := value(t, tt.in)
			_, err := ValidateSkills(in)
			requireValidation(t, err, wantErr{Type: TypeValueError, Loc: []any{"skills"}, Msg: "Value error, " + tt.msg, Input: jsonText(t, in)})
		})
	}

	t.Run("NotAList", func(t *testing.T) {
		t.Parallel()
		_, err := ValidateSkills(map[string]any{})
		requireValidation(t, err, wantErr{Type: TypeListType, Loc: []any{"skills"}, Msg: MsgListType})
	})
}

func TestValidateMCPServers(t *testing.T) {
	t.Parallel()

	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`{"name": "m%d", "url": "https://x/%d"}`, i, i)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}

	ok := []struct{ name, in string }{
		{"Empty", `[]`},
		{"URLDefaultType", `[{"name": "a", "url": "https://mcp.example/sse"}]`},
		{"URLWithHeaders", `[{"name": "a", "type": "url", "url": "https://x", "headers": {"Authorization": "Bearer ${TOKEN}"}}]`},
		{"Stdio", `[{"name": "a", "type": "stdio", "command": "npx", "args": ["-y", "srv"], "env": {"K": "v"}}]`},
		{"StdioNullOptionals", `[{"name": "a", "type": "stdio", "command": "npx", "args": null, "env": null}]`},
		{"UnknownKeysKept", `[{"name": "a", "url": "u", "timeout": 5}]`},
		{"Twenty", many(20)},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := value(t, tt.in)
			got, err := ValidateMCPServers(in)
			require.NoError(t, err)
			require.Equal(t, in, got, "echoed as submitted, no defaults")
		})
	}

	bad := []struct{ name, in, msg string }{
		{"NotObject", `[[]]`, "mcp_servers[0] must be an object"},
		{"MissingName", `[{"url": "u"}]`, "mcp_servers[0] missing required field: name"},
		{"NameNotString", `[{"name": 1, "url": "u"}]`, "mcp_servers[0].name must be a string"},
		{"UnknownType", `[{"name": "a", "type": "grpc"}]`, "mcp_servers[0]: unknown type 'grpc'. Must be one of: ['stdio', 'url']"},
		{"NullType", `[{"name": "a", "type": null, "url": "u"}]`, "mcp_servers[0]: unknown type None. Must be one of: ['stdio', 'url']"},
		{"URLMissing", `[{"name": "a"}]`, "mcp_servers[0] (url): missing required field: url"},
		{"URLMissingExplicitType", `[{"name": "a", "type": "url", "command": "x"}]`, "mcp_servers[0] (url): missing required field: url"},
		{"URLNotString", `[{"name": "a", "url": 5}]`, "mcp_servers[0] (url): url must be a string"},
		{"HeadersNotObject", `[{"name": "a", "url": "u", "headers": ["x"]}]`, "mcp_servers[0] (url): headers must be an object"},
		{"CommandMissing", `[{"name": "a", "url": "u"}, {"name": "b", "type": "stdio"}]`, "mcp_servers[1] (stdio): missing required field: command"},
		{"CommandNotString", `[{"name": "b", "type": "stdio", "command": ["npx"]}]`, "mcp_servers[0] (stdio): command must be a string"},
		{"ArgsNotList", `[{"name": "b", "type": "stdio", "command": "npx", "args": "-y"}]`, "mcp_servers[0] (stdio): args must be a list"},
		{"EnvNotObject", `[{"name": "b", "type": "stdio", "command": "npx", "env": "K=v"}]`, "mcp_servers[0] (stdio): env must be an object"},
		{"DuplicateName", `[{"name": "a", "url": "u"}, {"name": "a", "type": "stdio", "command": "c"}]`, "mcp_servers[1]: duplicate name 'a'"},
		{"TooMany", many(21), "Maximum 20 MCP servers per agent"},
		{"EntryErrorBeforeCount", many(20)[:len(many(20))-1] + `, {"name": "m0", "url": "u"}]`, "mcp_servers[20]: duplicate name 'm0'"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := value(t, tt.in)
			_, err := ValidateMCPServers(in)
			requireValidation(t, err, wantErr{Type: TypeValueError, Loc: []any{"mcp_servers"}, Msg: "Value error, " + tt.msg, Input: jsonText(t, in)})
		})
	}

	t.Run("NotAList", func(t *testing.T) {
		t.Parallel()
		_, err := ValidateMCPServers("x")
		requireValidation(t, err, wantErr{Type: TypeListType, Loc: []any{"mcp_servers"}, Msg: MsgListType, Input: `"x"`})
	})
}
