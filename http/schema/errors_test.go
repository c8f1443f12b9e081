package schema

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidationErrorDetail(t *testing.T) {
	t.Parallel()

	t.Run("ReferenceShapeHasNoCtx", func(t *testing.T) {
		t.Parallel()
		_, err := DecodeSessionCreate(body(t, `{"prompt": "hi", "timeout": 5, "secret_env_vars": {"BAD-KEY": "x"}}`))
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		const golden = `[` +
			`{"type":"missing","loc":["agent_id"],"msg":"Field required","input":{"prompt":"hi","secret_env_vars":{"BAD-KEY":"x"},"timeout":5},"url":"https://errors.pydantic.dev/2.11/v/missing"},` +
			`{"type":"greater_than_equal","loc":["timeout"],"msg":"Input should be greater than or equal to 10","input":5,"url":"https://errors.pydantic.dev/2.11/v/greater_than_equal"},` +
			`{"type":"value_error","loc":["secret_env_vars"],"msg":"Value error, Invalid env_var key 'BAD-KEY': must match [A-Za-z_][A-Za-z0-9_]*","input":{"BAD-KEY":"x"},"url":"https://errors.pydantic.dev/2.11/v/value_error"}` +
			`]`
		require.Equal(t, golden, jsonText(t, ve.Detail()))
	})

	t.Run("WithContext", func(t *testing.T) {
		t.Parallel()
		long := make([]byte, 201)
		for i := range long {
			long[i] = 'a'
		}
		_, err := DecodeAgentCreate(map[string]any{
			"name": string(long), "provider": "anthropic", "model": " ",
		})
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		golden := `[` +
			`{"type":"string_too_long","loc":["name"],"msg":"String should have at most 200 characters","input":"` + string(long) + `","ctx":{"max_length":200},"url":"https://errors.pydantic.dev/2.11/v/string_too_long"},` +
			`{"type":"value_error","loc":["model"],"msg":"Value error, Model must be a non-empty string","input":" ","ctx":{"error":{}},"url":"https://errors.pydantic.dev/2.11/v/value_error"}` +
			`]`
		require.Equal(t, golden, jsonText(t, ve.DetailWithContext()))

		_, err = DecodePrompt(body(t, `{"prompt": "x", "timeout": 3601}`))
		require.ErrorAs(t, err, &ve)
		require.Equal(t, `[{"type":"less_than_equal","loc":["timeout"],"msg":"Input should be less than or equal to 3600","input":3601,"ctx":{"le":3600},"url":"https://errors.pydantic.dev/2.11/v/less_than_equal"}]`,
			jsonText(t, ve.DetailWithContext()))
	})

	t.Run("MissingInputIsWholeBody", func(t *testing.T) {
		t.Parallel()
		_, err := DecodePrompt(map[string]any{})
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, `[{"type":"missing","loc":["prompt"],"msg":"Field required","input":{},"url":"https://errors.pydantic.dev/2.11/v/missing"}]`,
			jsonText(t, ve.Detail()))
	})

	t.Run("LiteralAndModelTypeCtx", func(t *testing.T) {
		t.Parallel()
		_, err := DecodeSessionCreate(body(t, `{"agent_id": "a", "prompt": "p", "resources": [{"type": "git", "url": "https://github.com/o/r"}, 7]}`))
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, `[`+
			`{"type":"literal_error","loc":["resources",0,"type"],"msg":"Input should be 'github_repository'","input":"git","ctx":{"expected":"'github_repository'"},"url":"https://errors.pydantic.dev/2.11/v/literal_error"},`+
			`{"type":"model_type","loc":["resources",1],"msg":"Input should be a valid dictionary or instance of GitHubRepoResource","input":7,"ctx":{"class_name":"GitHubRepoResource"},"url":"https://errors.pydantic.dev/2.11/v/model_type"}`+
			`]`, jsonText(t, ve.DetailWithContext()))
	})

	t.Run("ErrorStrings", func(t *testing.T) {
		t.Parallel()
		ve := &ValidationError{Errors: []FieldError{{Type: TypeMissing, Loc: []any{"resources", 0, "url"}, Msg: MsgMissing}}}
		require.Equal(t, "validation error: resources.0.url: Field required", ve.Error())
		require.Equal(t, "boom", (&StringError{Message: "boom"}).Error())
	})

	t.Run("SingularCharacter", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "String should have at most 1 character", stringTooLongErr(nil, "ab", 1).Msg)
	})
}

func TestDetail422(t *testing.T) {
	t.Parallel()

	_, err := DecodePrompt(map[string]any{})
	d, ok := Detail422(err)
	require.True(t, ok)
	require.Equal(t, `{"detail":[{"type":"missing","loc":["prompt"],"msg":"Field required","input":{},"url":"https://errors.pydantic.dev/2.11/v/missing"}]}`,
		jsonText(t, map[string]any{"detail": d}))

	_, _, _, err = NormalizeProviderModel("x", "m", "")
	d, ok = Detail422(err)
	require.True(t, ok)
	require.Equal(t, `{"detail":"Unknown provider: x. Must be one of: ['anthropic', 'google', 'openai']"}`,
		jsonText(t, map[string]any{"detail": d}))

	_, ok = Detail422(errors.New("other"))
	require.False(t, ok)
}
