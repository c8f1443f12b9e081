package runtimes

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPyJSON(t *testing.T) {
	t.Parallel()

	t.Run("OneLine", func(t *testing.T) {
		t.Parallel()
		// Expected: Python's json.dumps of the same value.
		v := object{
			{"s", "caf\u00e9 \U0001F600 <b>&\n\t\r\b\f\x01\x7f/\\\""},
			{"n", []any{1.0, 1.5, 1e16, 1e-05, nil, true, false, json.Number("7"), 3}},
			{"e", map[string]any{}},
			{"l", []any{}},
		}
		require.Equal(t,
			`{"s": "caf\u00e9 \ud83d\ude00 <b>&\n\t\r\b\f\u0001\u007f/\\\"", "n": [1, 1.5, 1e+16, 1e-05, null, true, false, 7, 3], "e": {}, "l": []}`,
			pyJSON(v, -1))
	})

	t.Run("Indented", func(t *testing.T) {
		t.Parallel()
		v := object{{"a", []any{1.0, map[string]any{"b": []string{}}}}, {"c", object{}}}
		require.Equal(t, "{\n  \"a\": [\n    1,\n    {\n      \"b\": []\n    }\n  ],\n  \"c\": {}\n}", pyJSON(v, 2))
	})

	t.Run("InvalidUTF8", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, `"a\ufffdb"`, pyJSON("a\xffb", -1))
	})
}

func TestTOML(t *testing.T) {
	t.Parallel()

	require.Equal(t, `"plain"`, tomlString("plain"))
	require.Equal(t, `"q\"b\\s\b\t\n\f\r\u0000\u001F\u007F é 😀"`, tomlString("q\"b\\s\b\t\n\f\r\x00\x1f\x7f é 😀"))
	require.Equal(t, "my-server_1", tomlKey("my-server_1"))
	require.Equal(t, `"my.server"`, tomlKey("my.server"))
	require.Equal(t, `"a \"b\""`, tomlKey(`a "b"`))
	require.Equal(t, `""`, tomlKey(""))
}
