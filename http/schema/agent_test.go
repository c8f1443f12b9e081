package schema

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNormalizeProviderModel(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name                                 string
		provider, model, runtime             string
		wantProvider, wantModel, wantRuntime string
		wantErr                              string
	}{
		{name: "Anthropic", provider: "anthropic", model: "claude-sonnet-4", wantProvider: "anthropic", wantModel: "claude-sonnet-4", wantRuntime: "claude"},
		{name: "OpenAIDefaultsCodex", provider: "openai", model: "gpt-5", wantProvider: "openai", wantModel: "gpt-5", wantRuntime: "codex"},
		{name: "GoogleDefaultsGemini", provider: "google", model: "gemini-2.5-pro", wantProvider: "google", wantModel: "gemini-2.5-pro", wantRuntime: "gemini"},
		{name: "Trims", provider: "  openai\n", model: "\tgpt-5 ", runtime: " codex ", wantProvider: "openai", wantModel: "gpt-5", wantRuntime: "codex"},
		{name: "StripsMatchingPrefix", provider: "anthropic", model: "anthropic/claude-opus-4", wantProvider: "anthropic", wantModel: "claude-opus-4", wantRuntime: "claude"},
		{name: "StripsPrefixThenTrims", provider: "openai", model: "openai/ gpt-5 ", wantProvider: "openai", wantModel: "gpt-5", wantRuntime: "codex"},
		{name: "KeepsUnknownPrefix", provider: "openai", model: "meta/llama-4", wantProvider: "openai", wantModel: "meta/llama-4", wantRuntime: "codex"},
		{name: "KeepsSecondSlash", provider: "google", model: "google/a/b", wantProvider: "google", wantModel: "a/b", wantRuntime: "gemini"},
		{name: "PrefixMismatch", provider: "anthropic", model: "openai/gpt-5", wantErr: "Model provider prefix 'openai' does not match provider 'anthropic'"},
		{name: "KimiPrefixNeverMatches", provider: "openai", model: "kimi/k2", wantErr: "Model provider prefix 'kimi' does not match provider 'openai'"},
		{name: "EmptyRemainder", provider: "openai", model: "openai/ ", wantErr: "Model must be a non-empty string"},
		{name: "BlankModel", provider: "openai", model: "   ", wantErr: "Model must be a non-empty string"},
		{name: "UnknownProvider", provider: "mistral", model: "m", wantErr: "Unknown provider: mistral. Must be one of: ['anthropic', 'google', 'openai']"},
		{name: "UnknownProviderTrimmed", provider: " Anthropic ", model: "m", wantErr: "Unknown provider: Anthropic. Must be one of: ['anthropic', 'google', 'openai']"},
		{name: "EmptyProvider", provider: "", model: "m", wantErr: "Unknown provider: . Must be one of: ['anthropic', 'google', 'openai']"},
		{name: "ProviderCheckedBeforeModel", provider: "x", model: "", wantErr: "Unknown provider: x. Must be one of: ['anthropic', 'google', 'openai']"},
		{name: "OpenCodeServesAnthropic", provider: "anthropic", model: "claude-sonnet-4", runtime: "opencode", wantProvider: "anthropic", wantModel: "claude-sonnet-4", wantRuntime: "opencode"},
		{name: "OpenCodeServesOpenAI", provider: "openai", model: "gpt-5", runtime: "opencode", wantProvider: "openai", wantModel: "gpt-5", wantRuntime: "opencode"},
		{name: "OpenCodeServesGoogle", provider: "google", model: "gemini", runtime: "opencode", wantProvider: "google", wantModel: "gemini", wantRuntime: "opencode"},
		{name: "ClaudeCannotServeOpenAI", provider: "openai", model: "gpt-5", runtime: "claude", wantErr: "Runtime 'claude' cannot serve provider 'openai'"},
		{name: "CodexCannotServeAnthropic", provider: "anthropic", model: "c", runtime: "codex", wantErr: "Runtime 'codex' cannot serve provider 'anthropic'"},
		{name: "GeminiCannotServeOpenAI", provider: "openai", model: "g", runtime: "gemini", wantErr: "Runtime 'gemini' cannot serve provider 'openai'"},
		{name: "UnknownRuntime", provider: "openai", model: "g", runtime: "goose", wantErr: "Unknown runtime: goose. Must be one of: ['claude', 'codex', 'gemini', 'opencode']"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, m, r, err := NormalizeProviderModel(tt.provider, tt.model, tt.runtime)
			if tt.wantErr != "" {
				requireString(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, []string{tt.wantProvider, tt.wantModel, tt.wantRuntime}, []string{p, m, r})
		})
	}
}

func TestDecodeAgentCreate(t *testing.T) {
	t.Parallel()

	t.Run("Minimal", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeAgentCreate(body(t, `{"name": "a", "provider": "anthropic", "model": "anthropic/claude-sonnet-4", "tools": ["ignored"]}`))
		require.NoError(t, err)
		require.Equal(t, &AgentCreate{
			Name: "a", Provider: "anthropic", Model: "claude-sonnet-4", Runtime: "claude",
			Skills: []any{}, MCPServers: []any{}, Metadata: map[string]any{},
		}, got)
	})

	t.Run("Full", func(t *testing.T) {
		t.Parallel()
		b := body(t, `{"name": "a", "provider": " openai ", "model": "gpt-5", "runtime": "opencode",
			"system": "be nice", "description": "d", "environment_id": "e1",
			"skills": [{"name": "s", "description": "d", "content": "c"}],
			"mcp_servers": [{"name": "m", "url": "https://x"}],
			"metadata": {"team": "x", "n": 1}}`)
		got, err := DecodeAgentCreate(b)
		require.NoError(t, err)
		require.Equal(t, &AgentCreate{
			Name: "a", Provider: "openai", Model: "gpt-5", Runtime: "opencode",
			System: "be nice", Description: "d", EnvironmentID: "e1",
			Skills:     b["skills"].([]any),
			MCPServers: b["mcp_servers"].([]any),
			Metadata:   b["metadata"].(map[string]any),
		}, got)
	})

	t.Run("NullEnvironmentAndRuntime", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeAgentCreate(body(t, `{"name": "a", "provider": "google", "model": "g", "environment_id": null, "runtime": null}`))
		require.NoError(t, err)
		require.Equal(t, "", got.EnvironmentID)
		require.Equal(t, "gemini", got.Runtime)
	})

	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		{name: "Empty", body: `{}`, want: []wantErr{
			{Type: TypeMissing, Loc: []any{"name"}, Msg: MsgMissing, Input: `{}`},
			{Type: TypeMissing, Loc: []any{"provider"}, Msg: MsgMissing, Input: `{}`},
			{Type: TypeMissing, Loc: []any{"model"}, Msg: MsgMissing, Input: `{}`},
		}},
		{name: "WrongTypes", body: `{"name": 1, "provider": true, "model": null, "runtime": 3, "system": null, "description": [], "environment_id": 5, "skills": {}, "mcp_servers": "x", "metadata": []}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"name"}, Msg: MsgStringType, Input: `1`},
			{Type: TypeStringType, Loc: []any{"provider"}, Msg: MsgStringType, Input: `true`},
			{Type: TypeStringType, Loc: []any{"model"}, Msg: MsgStringType, Input: `null`},
			{Type: TypeStringType, Loc: []any{"runtime"}, Msg: MsgStringType},
			{Type: TypeStringType, Loc: []any{"system"}, Msg: MsgStringType},
			{Type: TypeStringType, Loc: []any{"description"}, Msg: MsgStringType},
			{Type: TypeStringType, Loc: []any{"environment_id"}, Msg: MsgStringType},
			{Type: TypeListType, Loc: []any{"skills"}, Msg: MsgListType, Input: `{}`},
			{Type: TypeListType, Loc: []any{"mcp_servers"}, Msg: MsgListType},
			{Type: TypeDictType, Loc: []any{"metadata"}, Msg: MsgDictType, Input: `[]`},
		}},
		{name: "TooLong", body: `{"name": "` + strings.Repeat("n", 201) + `", "provider": "` + strings.Repeat("p", 33) + `", "model": "` + strings.Repeat("m", 101) + `"}`, want: []wantErr{
			{Type: TypeStringTooLong, Loc: []any{"name"}, Msg: "String should have at most 200 characters"},
			{Type: TypeStringTooLong, Loc: []any{"provider"}, Msg: "String should have at most 32 characters"},
			{Type: TypeStringTooLong, Loc: []any{"model"}, Msg: "String should have at most 100 characters"},
		}},
		{name: "BlankModel", body: `{"name": "a", "provider": "openai", "model": " \t"}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"model"}, Msg: "Value error, Model must be a non-empty string", Input: `" \t"`},
		}},
		{name: "EmptyModel", body: `{"name": "a", "provider": "openai", "model": ""}`, want: []wantErr{
			valueError(loc("model"), MsgModelNonEmpty),
		}},
		{name: "SkillAndMCPErrorsTogether", body: `{"name": "a", "provider": "openai", "model": "m", "skills": [1], "mcp_servers": [{"url": "u"}]}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"skills"}, Msg: "Value error, skills[0] must be an object", Input: `[1]`},
			valueError(loc("mcp_servers"), "mcp_servers[0] missing required field: name"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeAgentCreate(body(t, tt.body))
			requireValidation(t, err, tt.want...)
		})
	}

	stringErrs := []struct {
		name, body, want string
	}{
		{name: "UnknownProvider", body: `{"name": "a", "provider": "cohere", "model": "m"}`, want: "Unknown provider: cohere. Must be one of: ['anthropic', 'google', 'openai']"},
		{name: "PrefixMismatch", body: `{"name": "a", "provider": "anthropic", "model": "openai/gpt-5"}`, want: "Model provider prefix 'openai' does not match provider 'anthropic'"},
		{name: "EmptyRemainder", body: `{"name": "a", "provider": "openai", "model": "openai/"}`, want: "Model must be a non-empty string"},
		{name: "RuntimeMismatch", body: `{"name": "a", "provider": "openai", "model": "m", "runtime": "claude"}`, want: "Runtime 'claude' cannot serve provider 'openai'"},
		{name: "UnknownRuntime", body: `{"name": "a", "provider": "openai", "model": "m", "runtime": "aider"}`, want: "Unknown runtime: aider. Must be one of: ['claude', 'codex', 'gemini', 'opencode']"},
	}
	for _, tt := range stringErrs {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeAgentCreate(body(t, tt.body))
			requireString(t, err, tt.want)
		})
	}

	t.Run("ListErrorsBeforeNormalisation", func(t *testing.T) {
		t.Parallel()
		_, err := DecodeAgentCreate(body(t, `{"provider": "nope", "model": "m"}`))
		requireValidation(t, err, wantErr{Type: TypeMissing, Loc: []any{"name"}, Msg: MsgMissing})
	})
}

func TestDecodeAgentUpdate(t *testing.T) {
	t.Parallel()

	t.Run("VersionOnlyChangesNothing", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeAgentUpdate(body(t, `{"version": 3}`))
		require.NoError(t, err)
		require.Equal(t, &AgentUpdate{Version: 3}, got)
	})

	t.Run("NullsAreUnchanged", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeAgentUpdate(body(t, `{"version": "2", "name": null, "provider": null, "model": null, "runtime": null, "system": null, "description": null, "skills": null, "mcp_servers": null, "metadata": null}`))
		require.NoError(t, err)
		require.Equal(t, &AgentUpdate{Version: 2}, got)
	})

	t.Run("ExplicitNullEnvironmentDetaches", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeAgentUpdate(body(t, `{"version": 1, "environment_id": null}`))
		require.NoError(t, err)
		require.True(t, got.EnvironmentIDSet)
		require.Nil(t, got.EnvironmentID)
	})

	t.Run("EnvironmentSet", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeAgentUpdate(body(t, `{"version": 1, "environment_id": "e2"}`))
		require.NoError(t, err)
		require.True(t, got.EnvironmentIDSet)
		require.Equal(t, ptr("e2"), got.EnvironmentID)
	})

	t.Run("AllFields", func(t *testing.T) {
		t.Parallel()
		b := body(t, `{"version": 4.0, "name": "n", "provider": "", "model": "m", "runtime": "opencode", "system": "", "description": "d", "skills": [], "mcp_servers": [], "metadata": {"k": ""}}`)
		got, err := DecodeAgentUpdate(b)
		require.NoError(t, err)
		require.Equal(t, &AgentUpdate{
			Version: 4, Name: ptr("n"), Provider: ptr(""), Model: ptr("m"), Runtime: ptr("opencode"),
			System: ptr(""), Description: ptr("d"), Skills: []any{}, MCPServers: []any{},
			Metadata: map[string]any{"k": ""},
		}, got)
	})

	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		{name: "MissingVersion", body: `{"name": "x"}`, want: []wantErr{{Type: TypeMissing, Loc: []any{"version"}, Msg: MsgMissing, Input: `{"name":"x"}`}}},
		{name: "NullVersion", body: `{"version": null}`, want: []wantErr{{Type: TypeIntType, Loc: []any{"version"}, Msg: MsgIntType, Input: `null`}}},
		{name: "FractionalVersion", body: `{"version": 1.5}`, want: []wantErr{{Type: TypeIntFromFloat, Loc: []any{"version"}, Msg: MsgIntFromFloat, Input: `1.5`}}},
		{name: "UnparsableVersion", body: `{"version": "v1"}`, want: []wantErr{{Type: TypeIntParsing, Loc: []any{"version"}, Msg: MsgIntParsing, Input: `"v1"`}}},
		{name: "BlankModel", body: `{"version": 1, "model": "  "}`, want: []wantErr{valueError(loc("model"), MsgModelNonEmpty)}},
		{name: "EmptyModel", body: `{"version": 1, "model": ""}`, want: []wantErr{valueError(loc("model"), MsgModelNonEmpty)}},
		{name: "Limits", body: `{"version": 1, "name": "` + strings.Repeat("n", 201) + `", "provider": "` + strings.Repeat("p", 33) + `", "model": "` + strings.Repeat("m", 101) + `"}`, want: []wantErr{
			{Type: TypeStringTooLong, Loc: []any{"name"}, Msg: "String should have at most 200 characters"},
			{Type: TypeStringTooLong, Loc: []any{"provider"}, Msg: "String should have at most 32 characters"},
			{Type: TypeStringTooLong, Loc: []any{"model"}, Msg: "String should have at most 100 characters"},
		}},
		{name: "WrongTypes", body: `{"version": [], "environment_id": 1, "skills": "x", "mcp_servers": {}, "metadata": "x"}`, want: []wantErr{
			{Type: TypeIntType, Loc: []any{"version"}, Msg: MsgIntType},
			{Type: TypeStringType, Loc: []any{"environment_id"}, Msg: MsgStringType},
			{Type: TypeListType, Loc: []any{"skills"}, Msg: MsgListType},
			{Type: TypeListType, Loc: []any{"mcp_servers"}, Msg: MsgListType},
			{Type: TypeDictType, Loc: []any{"metadata"}, Msg: MsgDictType},
		}},
		{name: "SkillsValidated", body: `{"version": 1, "skills": [{"name": "a", "description": "d", "content": "c"}, {"name": "a", "description": "d", "content": "c"}]}`, want: []wantErr{
			valueError(loc("skills"), "skills[1]: duplicate name 'a'"),
		}},
		{name: "MCPValidated", body: `{"version": 1, "mcp_servers": [{"name": "a", "type": "grpc"}]}`, want: []wantErr{
			valueError(loc("mcp_servers"), "mcp_servers[0]: unknown type 'grpc'. Must be one of: ['stdio', 'url']"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeAgentUpdate(body(t, tt.body))
			requireValidation(t, err, tt.want...)
		})
	}
}

func TestAgentUpdateResolveProviderModel(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		body    string
		cur     [3]string
		want    [3]string
		wantErr string
	}{
		{name: "Unchanged", body: `{"version": 1}`, cur: [3]string{"anthropic", "claude-sonnet-4", "claude"}, want: [3]string{"anthropic", "claude-sonnet-4", "claude"}},
		{name: "EmptyProviderIsUnchanged", body: `{"version": 1, "provider": ""}`, cur: [3]string{"openai", "gpt-5", "codex"}, want: [3]string{"openai", "gpt-5", "codex"}},
		{name: "NewModelNormalised", body: `{"version": 1, "model": " openai/gpt-5.1 "}`, cur: [3]string{"openai", "gpt-5", "codex"}, want: [3]string{"openai", "gpt-5.1", "codex"}},
		{name: "ProviderChangeRedefaultsRuntime", body: `{"version": 1, "provider": "openai", "model": "gpt-5"}`, cur: [3]string{"anthropic", "claude-sonnet-4", "claude"}, want: [3]string{"openai", "gpt-5", "codex"}},
		{name: "ProviderChangeKeepsOpenCode", body: `{"version": 1, "provider": "google", "model": "gemini"}`, cur: [3]string{"anthropic", "c", "opencode"}, want: [3]string{"google", "gemini", "opencode"}},
		{name: "SameProviderPaddedKeepsRuntime", body: `{"version": 1, "provider": " anthropic "}`, cur: [3]string{"anthropic", "c", "opencode"}, want: [3]string{"anthropic", "c", "opencode"}},
		{name: "SetRuntime", body: `{"version": 1, "runtime": "opencode"}`, cur: [3]string{"openai", "gpt-5", "codex"}, want: [3]string{"openai", "gpt-5", "opencode"}},
		{name: "EmptyRuntimeIsUnchanged", body: `{"version": 1, "runtime": ""}`, cur: [3]string{"openai", "gpt-5", "opencode"}, want: [3]string{"openai", "gpt-5", "opencode"}},
		{name: "RuntimeMismatch", body: `{"version": 1, "runtime": "claude"}`, cur: [3]string{"openai", "gpt-5", "codex"}, wantErr: "Runtime 'claude' cannot serve provider 'openai'"},
		{name: "ProviderChangeWithIncompatibleRuntime", body: `{"version": 1, "provider": "openai", "runtime": "gemini"}`, cur: [3]string{"google", "g", "gemini"}, wantErr: "Runtime 'gemini' cannot serve provider 'openai'"},
		{name: "PrefixMismatchAgainstStoredProvider", body: `{"version": 1, "model": "openai/gpt-5"}`, cur: [3]string{"anthropic", "c", "claude"}, wantErr: "Model provider prefix 'openai' does not match provider 'anthropic'"},
		{name: "UnknownProvider", body: `{"version": 1, "provider": "x"}`, cur: [3]string{"anthropic", "c", "claude"}, wantErr: "Unknown provider: x. Must be one of: ['anthropic', 'google', 'openai']"},
		{name: "BlankProviderIsNotUnchanged", body: `{"version": 1, "provider": "  "}`, cur: [3]string{"anthropic", "c", "claude"}, wantErr: "Unknown provider: . Must be one of: ['anthropic', 'google', 'openai']"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := DecodeAgentUpdate(body(t, tt.body))
			require.NoError(t, err)
			p, m, r, err := u.ResolveProviderModel(tt.cur[0], tt.cur[1], tt.cur[2])
			if tt.wantErr != "" {
				requireString(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, [3]string{p, m, r})
		})
	}
}

func TestMergeMetadata(t *testing.T) {
	t.Parallel()

	cur := map[string]any{"keep": "k", "drop": "d", "over": "o"}
	patch := map[string]any{"drop": "", "over": 2, "new": nil, "gone": ""}
	got := MergeMetadata(cur, patch)
	require.Equal(t, map[string]any{"keep": "k", "over": 2, "new": nil}, got)
	require.Equal(t, map[string]any{"keep": "k", "drop": "d", "over": "o"}, cur, "current not modified")
	require.Equal(t, map[string]any{}, MergeMetadata(nil, map[string]any{"x": ""}))
}

func TestDefaultRuntime(t *testing.T) {
	t.Parallel()
	require.Equal(t, "claude", DefaultRuntime("anthropic"))
	require.Equal(t, "codex", DefaultRuntime("openai"))
	require.Equal(t, "gemini", DefaultRuntime("google"))
	require.Equal(t, "", DefaultRuntime("kimi"))
}
