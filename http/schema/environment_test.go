package schema

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeEnvironmentCreate(t *testing.T) {
	t.Parallel()

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentCreate(body(t, `{"name": "e", "unknown": 1}`))
		require.NoError(t, err)
		require.Equal(t, &EnvironmentCreate{
			Name: "e", Packages: map[string][]string{}, EnvVars: map[string]string{},
			Networking: Networking{Type: NetworkingUnrestricted, Config: map[string]any{}},
		}, got)
	})

	t.Run("Full", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentCreate(body(t, `{"name": "e",
			"packages": {"apt": ["jq"], "pip": ["requests", "numpy"], "npm": []},
			"env_vars": {"_A1": "x", "b": ""},
			"setup_script": "echo hi",
			"networking": {"type": "limited", "allowed_hosts": ["github.com"], "note": 1}}`))
		require.NoError(t, err)
		require.Equal(t, &EnvironmentCreate{
			Name:        "e",
			Packages:    map[string][]string{"apt": {"jq"}, "pip": {"requests", "numpy"}, "npm": {}},
			EnvVars:     map[string]string{"_A1": "x", "b": ""},
			SetupScript: "echo hi",
			Networking: Networking{Type: NetworkingLimited, Config: map[string]any{
				"allowed_hosts": []any{"github.com"}, "note": value(t, "1"),
			}},
		}, got)
	})

	t.Run("NetworkingWithoutTypeIsUnrestricted", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentCreate(body(t, `{"name": "e", "networking": {"allowed_hosts": "not checked"}}`))
		require.NoError(t, err)
		require.Equal(t, Networking{Type: NetworkingUnrestricted, Config: map[string]any{"allowed_hosts": "not checked"}}, got.Networking)
	})

	t.Run("LimitedWithoutHosts", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentCreate(body(t, `{"name": "e", "networking": {"type": "limited"}}`))
		require.NoError(t, err)
		require.Equal(t, Networking{Type: NetworkingLimited, Config: map[string]any{}}, got.Networking)
	})

	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		{name: "MissingName", body: `{}`, want: []wantErr{{Type: TypeMissing, Loc: []any{"name"}, Msg: MsgMissing, Input: `{}`}}},
		{name: "NameTooLong", body: `{"name": "` + strings.Repeat("n", 201) + `"}`, want: []wantErr{{Type: TypeStringTooLong, Loc: []any{"name"}, Msg: "String should have at most 200 characters"}}},
		{name: "NullsAreTypeErrors", body: `{"name": "e", "packages": null, "env_vars": null, "setup_script": null, "networking": null}`, want: []wantErr{
			{Type: TypeDictType, Loc: []any{"packages"}, Msg: MsgDictType, Input: `null`},
			{Type: TypeDictType, Loc: []any{"env_vars"}, Msg: MsgDictType},
			{Type: TypeStringType, Loc: []any{"setup_script"}, Msg: MsgStringType},
			{Type: TypeDictType, Loc: []any{"networking"}, Msg: MsgDictType},
		}},
		{name: "PackageShapes", body: `{"name": "e", "packages": {"pip": "requests", "apt": ["jq", 5, null]}}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"packages", "apt", 1}, Msg: MsgStringType, Input: `5`},
			{Type: TypeStringType, Loc: []any{"packages", "apt", 2}, Msg: MsgStringType, Input: `null`},
			{Type: TypeListType, Loc: []any{"packages", "pip"}, Msg: MsgListType, Input: `"requests"`},
		}},
		{name: "ShapeErrorsHideManagerCheck", body: `{"name": "e", "packages": {"brew": 1}}`, want: []wantErr{
			{Type: TypeListType, Loc: []any{"packages", "brew"}, Msg: MsgListType},
		}},
		{name: "UnknownManager", body: `{"name": "e", "packages": {"apt": ["jq"], "brew": ["wget"]}}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"packages"}, Msg: "Value error, Unknown package manager: brew. Must be one of: ['apt', 'cargo', 'gem', 'go', 'npm', 'pip']", Input: `{"apt":["jq"],"brew":["wget"]}`},
		}},
		{name: "EnvVarValueNotString", body: `{"name": "e", "env_vars": {"A": 1, "B": "ok", "C": true}}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"env_vars", "A"}, Msg: MsgStringType, Input: `1`},
			{Type: TypeStringType, Loc: []any{"env_vars", "C"}, Msg: MsgStringType, Input: `true`},
		}},
		{name: "EnvVarBadKey", body: `{"name": "e", "env_vars": {"BAD-KEY": "x"}}`, want: []wantErr{
			valueError(loc("env_vars"), "Invalid env_var key 'BAD-KEY': must match [A-Za-z_][A-Za-z0-9_]*"),
		}},
		{name: "EnvVarLeadingDigit", body: `{"name": "e", "env_vars": {"1A": "x"}}`, want: []wantErr{
			valueError(loc("env_vars"), "Invalid env_var key '1A': must match [A-Za-z_][A-Za-z0-9_]*"),
		}},
		{name: "EnvVarEmptyKey", body: `{"name": "e", "env_vars": {"": "x"}}`, want: []wantErr{
			valueError(loc("env_vars"), "Invalid env_var key '': must match [A-Za-z_][A-Za-z0-9_]*"),
		}},
		{name: "EnvVarNewlineKey", body: `{"name": "e", "env_vars": {"GOOD\nBAD": "x"}}`, want: []wantErr{
			valueError(loc("env_vars"), `Invalid env_var key 'GOOD\nBAD': must match [A-Za-z_][A-Za-z0-9_]*`),
		}},
		{name: "EnvVarsNotObject", body: `{"name": "e", "env_vars": ["A"]}`, want: []wantErr{{Type: TypeDictType, Loc: []any{"env_vars"}, Msg: MsgDictType}}},
		{name: "SetupScriptNotString", body: `{"name": "e", "setup_script": 1}`, want: []wantErr{{Type: TypeStringType, Loc: []any{"setup_script"}, Msg: MsgStringType}}},
		{name: "NetworkingBadType", body: `{"name": "e", "networking": {"type": "open"}}`, want: []wantErr{
			{Type: TypeValueError, Loc: []any{"networking"}, Msg: "Value error, networking.type must be 'unrestricted' or 'limited'", Input: `{"type":"open"}`},
		}},
		{name: "NetworkingNullType", body: `{"name": "e", "networking": {"type": null}}`, want: []wantErr{valueError(loc("networking"), MsgNetworkingType)}},
		{name: "NetworkingListType", body: `{"name": "e", "networking": {"type": ["limited"]}}`, want: []wantErr{valueError(loc("networking"), MsgNetworkingType)}},
		{name: "AllowedHostsNotList", body: `{"name": "e", "networking": {"type": "limited", "allowed_hosts": "github.com"}}`, want: []wantErr{
			valueError(loc("networking"), "networking.allowed_hosts must be a list"),
		}},
		{name: "AllowedHostsNull", body: `{"name": "e", "networking": {"type": "limited", "allowed_hosts": null}}`, want: []wantErr{
			valueError(loc("networking"), MsgNetworkingAllowedHosts),
		}},
		{name: "NetworkingNotObject", body: `{"name": "e", "networking": "limited"}`, want: []wantErr{{Type: TypeDictType, Loc: []any{"networking"}, Msg: MsgDictType}}},
		{name: "AllFieldErrorsInOrder", body: `{"name": 1, "packages": {"x": []}, "env_vars": {"-": "v"}, "setup_script": [], "networking": {"type": 1}}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"name"}, Msg: MsgStringType},
			valueError(loc("packages"), UnknownPackageManagerMessage("x")),
			valueError(loc("env_vars"), InvalidEnvVarKeyMessage("-")),
			{Type: TypeStringType, Loc: []any{"setup_script"}, Msg: MsgStringType},
			valueError(loc("networking"), MsgNetworkingType),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeEnvironmentCreate(body(t, tt.body))
			requireValidation(t, err, tt.want...)
		})
	}
}

func TestDecodeEnvironmentUpdate(t *testing.T) {
	t.Parallel()

	t.Run("VersionOnly", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentUpdate(body(t, `{"version": "7"}`))
		require.NoError(t, err)
		require.Equal(t, &EnvironmentUpdate{Version: 7}, got)
	})

	t.Run("NullsAreUnchanged", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentUpdate(body(t, `{"version": 1, "name": null, "packages": null, "env_vars": null, "setup_script": null, "networking": null}`))
		require.NoError(t, err)
		require.Equal(t, &EnvironmentUpdate{Version: 1}, got)
	})

	t.Run("AllFields", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeEnvironmentUpdate(body(t, `{"version": 1, "name": "n", "packages": {}, "env_vars": {}, "setup_script": "", "networking": {"type": "limited", "allowed_hosts": []}}`))
		require.NoError(t, err)
		require.Equal(t, &EnvironmentUpdate{
			Version: 1, Name: ptr("n"), Packages: map[string][]string{}, EnvVars: map[string]string{},
			SetupScript: ptr(""),
			Networking:  &Networking{Type: NetworkingLimited, Config: map[string]any{"allowed_hosts": []any{}}},
		}, got, "empty maps are replacements, not 'unchanged'")
	})

	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		{name: "MissingVersion", body: `{"name": "n"}`, want: []wantErr{{Type: TypeMissing, Loc: []any{"version"}, Msg: MsgMissing, Input: `{"name":"n"}`}}},
		{name: "BadVersion", body: `{"version": "one"}`, want: []wantErr{{Type: TypeIntParsing, Loc: []any{"version"}, Msg: MsgIntParsing}}},
		{name: "NameTooLong", body: `{"version": 1, "name": "` + strings.Repeat("n", 201) + `"}`, want: []wantErr{{Type: TypeStringTooLong, Loc: []any{"name"}, Msg: "String should have at most 200 characters"}}},
		{name: "Validators", body: `{"version": 1, "packages": {"yum": []}, "env_vars": {"A B": "x"}, "networking": {"type": "none"}}`, want: []wantErr{
			valueError(loc("packages"), "Unknown package manager: yum. Must be one of: ['apt', 'cargo', 'gem', 'go', 'npm', 'pip']"),
			valueError(loc("env_vars"), "Invalid env_var key 'A B': must match [A-Za-z_][A-Za-z0-9_]*"),
			valueError(loc("networking"), MsgNetworkingType),
		}},
		{name: "Types", body: `{"version": 1, "name": 5, "packages": [], "env_vars": {"A": 1}, "setup_script": 1, "networking": []}`, want: []wantErr{
			{Type: TypeStringType, Loc: []any{"name"}, Msg: MsgStringType},
			{Type: TypeDictType, Loc: []any{"packages"}, Msg: MsgDictType},
			{Type: TypeStringType, Loc: []any{"env_vars", "A"}, Msg: MsgStringType},
			{Type: TypeStringType, Loc: []any{"setup_script"}, Msg: MsgStringType},
			{Type: TypeDictType, Loc: []any{"networking"}, Msg: MsgDictType},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeEnvironmentUpdate(body(t, tt.body))
			requireValidation(t, err, tt.want...)
		})
	}
}
