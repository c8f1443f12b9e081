package schema

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeSessionCreate(t *testing.T) {
	t.Parallel()

	t.Run("Minimal", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeSessionCreate(body(t, `{"agent_id": "a1", "prompt": "hi", "extra": true}`))
		require.NoError(t, err)
		require.Equal(t, &SessionCreate{
			AgentID: "a1", Prompt: "hi", Timeout: 600,
			Resources: []GitHubRepoResource{}, SecretEnvVars: map[string]string{},
		}, got)
	})

	t.Run("Full", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeSessionCreate(body(t, `{"agent_id": "a1", "prompt": "", "timeout": "120", "environment_id": "e1",
			"resources": [
				{"type": "github_repository", "url": "https://github.com/octo-org/hello.world.git"},
				{"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "/srv/r", "authorization_token": "ghp_x"},
				{"type": "github_repository", "url": "https://github.com/o/r2", "mount_path": null, "authorization_token": null}
			],
			"secret_env_vars": {"ANTHROPIC_API_KEY": "sk"}}`))
		require.NoError(t, err)
		require.Equal(t, &SessionCreate{
			AgentID: "a1", Prompt: "", Timeout: 120,
			EnvironmentIDSet: true, EnvironmentID: ptr("e1"),
			Resources: []GitHubRepoResource{
				{Type: "github_repository", URL: "https://github.com/octo-org/hello.world", MountPath: "/workspace/hello.world"},
				{Type: "github_repository", URL: "https://github.com/o/r", MountPath: "/srv/r", AuthorizationToken: "ghp_x"},
				{Type: "github_repository", URL: "https://github.com/o/r2", MountPath: "/workspace/r2"},
			},
			SecretEnvVars: map[string]string{"ANTHROPIC_API_KEY": "sk"},
		}, got)
	})

	t.Run("EnvironmentNull", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeSessionCreate(body(t, `{"agent_id": "a", "prompt": "p", "environment_id": null}`))
		require.NoError(t, err)
		require.True(t, got.EnvironmentIDSet)
		require.Nil(t, got.EnvironmentID)
	})

	t.Run("TimeoutCoercion", func(t *testing.T) {
		t.Parallel()
		for in, want := range map[string]int{`10`: 10, `3600`: 3600, `"120"`: 120, `120.0`: 120, `" 60 "`: 60, `"60.0"`: 60} {
			got, err := DecodeSessionCreate(body(t, `{"agent_id": "a", "prompt": "p", "timeout": `+in+`}`))
			require.NoError(t, err, in)
			require.Equal(t, want, got.Timeout, in)
		}
	})

	t.Run("TenResources", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeSessionCreate(body(t, `{"agent_id": "a", "prompt": "p", "resources": `+repos(10)+`}`))
		require.NoError(t, err)
		require.Len(t, got.Resources, 10)
	})

	t.Run("URLEdgeCases", func(t *testing.T) {
		t.Parallel()
		for url, want := range map[string][2]string{
			"https://github.com/a_b/c-d.e":         {"https://github.com/a_b/c-d.e", "/workspace/c-d.e"},
			"https://github.com/o/r.git.git":       {"https://github.com/o/r.git", "/workspace/r.git"},
			"https://github.com/o/.git":            {"https://github.com/o/", "/workspace/o"},
			"https://github.com/O/R":               {"https://github.com/O/R", "/workspace/R"},
			"https://github.com/1/2":               {"https://github.com/1/2", "/workspace/2"},
			"https://github.com/owner/repo.github": {"https://github.com/owner/repo.github", "/workspace/repo.github"},
		} {
			got, err := DecodeSessionCreate(body(t, `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "`+url+`"}]}`))
			require.NoError(t, err, url)
			require.Equal(t, want, [2]string{got.Resources[0].URL, got.Resources[0].MountPath}, url)
		}
	})

	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		{name: "Empty", body: `{}`, want: []wantErr{
			{Type: TypeMissing, Loc: []any{"agent_id"}, Msg: MsgMissing, Input: `{}`},
			{Type: TypeMissing, Loc: []any{"prompt"}, Msg: MsgMissing, Input: `{}`},
		}},
		{name: "Types", body: `{"agent_id": 5, "prompt": null, "timeout": null, "environment_id": 1, "resources": {}, "secret_env_vars": []}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"agent_id"}, Msg: MsgStringType, Input: `5`},
			{Type: TypeStringType, Loc: []any{"prompt"}, Msg: MsgStringType, Input: `null`},
			{Type: TypeIntType, Loc: []any{"timeout"}, Msg: MsgIntType, Input: `null`},
			{Type: TypeStringType, Loc: []any{"environment_id"}, Msg: MsgStringType},
			{Type: TypeListType, Loc: []any{"resources"}, Msg: MsgListType},
			{Type: TypeDictType, Loc: []any{"secret_env_vars"}, Msg: MsgDictType},
		}},
		{name: "TimeoutTooSmall", body: `{"agent_id": "a", "prompt": "p", "timeout": 9}`, want: []wantErr{
			{Type: TypeGreaterThanEqual, Loc: []any{"timeout"}, Msg: "Input should be greater than or equal to 10", Input: `9`},
		}},
		{name: "TimeoutTooSmallString", body: `{"agent_id": "a", "prompt": "p", "timeout": "5"}`, want: []wantErr{
			{Type: TypeGreaterThanEqual, Loc: []any{"timeout"}, Msg: "Input should be greater than or equal to 10", Input: `"5"`},
		}},
		{name: "TimeoutTooBig", body: `{"agent_id": "a", "prompt": "p", "timeout": 3601}`, want: []wantErr{
			{Type: TypeLessThanEqual, Loc: []any{"timeout"}, Msg: "Input should be less than or equal to 3600", Input: `3601`},
		}},
		{name: "TimeoutBoolIsOne", body: `{"agent_id": "a", "prompt": "p", "timeout": true}`, want: []wantErr{
			{Type: TypeGreaterThanEqual, Loc: []any{"timeout"}, Msg: "Input should be greater than or equal to 10", Input: `true`},
		}},
		{name: "TimeoutFraction", body: `{"agent_id": "a", "prompt": "p", "timeout": 60.5}`, want: []wantErr{
			{Type: TypeIntFromFloat, Loc: []any{"timeout"}, Msg: MsgIntFromFloat, Input: `60.5`},
		}},
		{name: "TimeoutWord", body: `{"agent_id": "a", "prompt": "p", "timeout": "soon"}`, want: []wantErr{
			{Type: TypeIntParsing, Loc: []any{"timeout"}, Msg: MsgIntParsing, Input: `"soon"`},
		}},
		{name: "ResourceNotObject", body: `{"agent_id": "a", "prompt": "p", "resources": ["https://github.com/o/r"]}`, want: []wantErr{
			{Type: TypeModelType, Loc: []any{"resources", 0}, Msg: "Input should be a valid dictionary or instance of GitHubRepoResource", Input: `"https://github.com/o/r"`},
		}},
		{name: "ResourceEmpty", body: `{"agent_id": "a", "prompt": "p", "resources": [{}]}`, want: []wantErr{
			{Type: TypeMissing, Loc: []any{"resources", 0, "type"}, Msg: MsgMissing, Input: `{}`},
			{Type: TypeMissing, Loc: []any{"resources", 0, "url"}, Msg: MsgMissing, Input: `{}`},
		}},
		{name: "ResourceWrongType", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "gitlab_repository", "url": "https://github.com/o/r"}]}`, want: []wantErr{
			{Type: TypeLiteralError, Loc: []any{"resources", 0, "type"}, Msg: "Input should be 'github_repository'", Input: `"gitlab_repository"`},
		}},
		{name: "ResourceTypeNotString", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": 1, "url": "https://github.com/o/r"}]}`, want: []wantErr{
			{Type: TypeLiteralError, Loc: []any{"resources", 0, "type"}, Msg: "Input should be 'github_repository'", Input: `1`},
		}},
		{name: "ResourceFieldTypes", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": 1, "mount_path": 2, "authorization_token": 3}]}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"resources", 0, "url"}, Msg: MsgStringType},
			{Type: TypeStringType, Loc: []any{"resources", 0, "mount_path"}, Msg: MsgStringType},
			{Type: TypeStringType, Loc: []any{"resources", 0, "authorization_token"}, Msg: MsgStringType},
		}},
		{name: "MountPathRelative", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "work/r"}]}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"resources", 0, "mount_path"}, Msg: "Value error, mount_path must be an absolute path", Input: `"work/r"`},
		}},
		{name: "MountPathEmpty", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "https://github.com/o/r", "mount_path": ""}]}`, want: []wantErr{
			valueError(loc("resources", 0, "mount_path"), MsgMountPathAbsolute),
		}},
		{name: "MountPathRoot", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "/"}]}`, want: []wantErr{
			valueError(loc("resources", 0, "mount_path"), "mount_path must not be the Sprite root"),
		}},
		{name: "MountPathHome", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "/home/sprite"}]}`, want: []wantErr{
			valueError(loc("resources", 0, "mount_path"), MsgMountPathSpriteRoot),
		}},
		{name: "DuplicateDefaultMountPath", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "https://github.com/a/r"}, {"type": "github_repository", "url": "https://github.com/b/r.git"}]}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"resources"}, Msg: "Value error, Duplicate mount_path in resources"},
		}},
		{name: "DuplicateExplicitMountPath", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "https://github.com/a/x"}, {"type": "github_repository", "url": "https://github.com/b/y", "mount_path": "/workspace/x"}]}`, want: []wantErr{
			valueError(loc("resources"), MsgDuplicateMountPath),
		}},
		{name: "ElevenResources", body: `{"agent_id": "a", "prompt": "p", "resources": ` + repos(11) + `}`, want: []wantErr{
			valueError(loc("resources"), "Maximum 10 resources per session"),
		}},
		{name: "ItemErrorsBeforeCount", body: `{"agent_id": "a", "prompt": "p", "resources": ` + repos(11)[:len(repos(11))-1] + `, 1]}`, want: []wantErr{
			{Type: TypeModelType, Loc: []any{"resources", 11}, Msg: "Input should be a valid dictionary or instance of GitHubRepoResource"},
		}},
		{name: "SecretValueNotString", body: `{"agent_id": "a", "prompt": "p", "secret_env_vars": {"K": 1}}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"secret_env_vars", "K"}, Msg: MsgStringType, Input: `1`},
		}},
		{name: "SecretBadKey", body: `{"agent_id": "a", "prompt": "p", "secret_env_vars": {"my-key": "v"}}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"secret_env_vars"}, Msg: "Value error, Invalid env_var key 'my-key': must match [A-Za-z_][A-Za-z0-9_]*", Input: `{"my-key":"v"}`},
		}},
		{name: "ErrorsFromSeveralItems", body: `{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": "http://github.com/o/r"}, {"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "x"}]}`, want: []wantErr{
			valueError(loc("resources", 0, "url"), MsgGitHubURL),
			valueError(loc("resources", 1, "mount_path"), MsgMountPathAbsolute),
		}},
	}
	badURLs := []string{
		"http://github.com/o/r",
		"https://gitlab.com/o/r",
		"https://github.com/o",
		"https://github.com/o/r/",
		"https://github.com/o/r/tree/main",
		"https://github.com/x/y@evil.com/z",
		"https://github.com/ów/rëpo",
		"https://github.com/o/r\n",
		"https://github.com/o/r?x=1",
		"https://github.com/o /r",
		" https://github.com/o/r",
		"git@github.com:o/r.git",
		"",
	}
	for i, u := range badURLs {
		tests = append(tests, struct {
			name string
			body string
			want []wantErr
		}{
			name: fmt.Sprintf("BadURL%02d", i),
			body: fmt.Sprintf(`{"agent_id": "a", "prompt": "p", "resources": [{"type": "github_repository", "url": %q}]}`, u),
			want: []wantErr{{Type: TypeValueError, Loc: []any{"resources", 0, "url"}, Msg: "Value error, Must be a valid https://github.com/<owner>/<repo> URL", Input: jsonText(t, u)}},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeSessionCreate(body(t, tt.body))
			requireValidation(t, err, tt.want...)
		})
	}
}

func repos(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"type": "github_repository", "url": "https://github.com/o/r%d"}`, i)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestDecodePrompt(t *testing.T) {
	t.Parallel()

	t.Run("Default", func(t *testing.T) {
		t.Parallel()
		got, err := DecodePrompt(body(t, `{"prompt": "next", "agent_id": "ignored"}`))
		require.NoError(t, err)
		require.Equal(t, &Prompt{Prompt: "next", Timeout: 600}, got)
	})

	t.Run("Timeout", func(t *testing.T) {
		t.Parallel()
		got, err := DecodePrompt(body(t, `{"prompt": "next", "timeout": "30"}`))
		require.NoError(t, err)
		require.Equal(t, &Prompt{Prompt: "next", Timeout: 30}, got)
	})

	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		{name: "Missing", body: `{"timeout": 60}`, want: []wantErr{{Type: TypeMissing, Loc: []any{"prompt"}, Msg: MsgMissing, Input: `{"timeout":60}`}}},
		{name: "NotString", body: `{"prompt": 1}`, want: []wantErr{{Type: TypeStringType, Loc: []any{"prompt"}, Msg: MsgStringType}}},
		{name: "ListPrompt", body: `{"prompt": ["a"]}`, want: []wantErr{{Type: TypeStringType, Loc: []any{"prompt"}, Msg: MsgStringType}}},
		{name: "TimeoutRange", body: `{"prompt": "p", "timeout": 0}`, want: []wantErr{{Type: TypeGreaterThanEqual, Loc: []any{"timeout"}, Msg: "Input should be greater than or equal to 10"}}},
		{name: "TimeoutMax", body: `{"prompt": "p", "timeout": "3601"}`, want: []wantErr{{Type: TypeLessThanEqual, Loc: []any{"timeout"}, Msg: "Input should be less than or equal to 3600"}}},
		{name: "BothBad", body: `{"timeout": {}}`, want: []wantErr{
			{Type: TypeMissing, Loc: []any{"prompt"}, Msg: MsgMissing},
			{Type: TypeIntType, Loc: []any{"timeout"}, Msg: MsgIntType},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodePrompt(body(t, tt.body))
			requireValidation(t, err, tt.want...)
		})
	}
}
