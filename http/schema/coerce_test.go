package schema

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLaxInt(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		in      any
		want    int64
		errType string
		errMsg  string
	}{
		{name: "JSONInt", in: json.Number("120"), want: 120},
		{name: "JSONNegative", in: json.Number("-3"), want: -3},
		{name: "JSONFloatWhole", in: json.Number("120.0"), want: 120},
		{name: "JSONExponent", in: json.Number("1.2e2"), want: 120},
		{name: "JSONFraction", in: json.Number("120.5"), errType: TypeIntFromFloat, errMsg: MsgIntFromFloat},
		{name: "JSONHugeInt", in: json.Number("123456789012345678901234567890"), errType: TypeIntParsingSize, errMsg: MsgIntParsingSize},
		{name: "JSONHugeFloat", in: json.Number("1e300"), errType: TypeIntParsingSize, errMsg: MsgIntParsingSize},
		{name: "JSONInfinite", in: json.Number("1e400"), errType: TypeFiniteNumber, errMsg: MsgFiniteNumber},
		{name: "Float64", in: 120.0, want: 120},
		{name: "Float64Fraction", in: 0.5, errType: TypeIntFromFloat, errMsg: MsgIntFromFloat},
		{name: "GoInt", in: 7, want: 7},
		{name: "GoInt64", in: int64(7), want: 7},
		{name: "True", in: true, want: 1},
		{name: "False", in: false, want: 0},
		{name: "String", in: "120", want: 120},
		{name: "StringSpaces", in: " 120\n", want: 120},
		{name: "StringPlus", in: "+5", want: 5},
		{name: "StringDecimalZeros", in: "120.000", want: 120},
		{name: "StringTrailingDot", in: "120.", want: 120},
		{name: "StringUnderscores", in: "1_000", want: 1000},
		{name: "StringBadUnderscore", in: "1__0", errType: TypeIntParsing, errMsg: MsgIntParsing},
		{name: "StringFraction", in: "120.5", errType: TypeIntParsing, errMsg: MsgIntParsing},
		{name: "StringWord", in: "ten", errType: TypeIntParsing, errMsg: MsgIntParsing},
		{name: "StringEmpty", in: "", errType: TypeIntParsing, errMsg: MsgIntParsing},
		{name: "StringHuge", in: "99999999999999999999", errType: TypeIntParsingSize, errMsg: MsgIntParsingSize},
		{name: "Null", in: nil, errType: TypeIntType, errMsg: MsgIntType},
		{name: "List", in: []any{}, errType: TypeIntType, errMsg: MsgIntType},
		{name: "Object", in: map[string]any{}, errType: TypeIntType, errMsg: MsgIntType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, fe := asInt(tt.in, loc("n"), intBounds{})
			if tt.errType == "" {
				require.Nil(t, fe)
				require.Equal(t, tt.want, got)
				return
			}
			require.NotNil(t, fe)
			require.Equal(t, FieldError{Type: tt.errType, Loc: []any{"n"}, Msg: tt.errMsg, Input: tt.in}, *fe)
		})
	}
}

func TestLaxString(t *testing.T) {
	t.Parallel()

	for _, in := range []any{json.Number("1"), 1.5, true, nil, []any{}, map[string]any{}} {
		_, fe := asString(in, loc("s"), 0)
		require.NotNil(t, fe, "%#v", in)
		require.Equal(t, FieldError{Type: TypeStringType, Loc: []any{"s"}, Msg: MsgStringType, Input: in}, *fe)
	}
	s, fe := asString("héllo", loc("s"), 5)
	require.Nil(t, fe, "length counts code points, not bytes")
	require.Equal(t, "héllo", s)
	_, fe = asString("héllo!", loc("s"), 5)
	require.NotNil(t, fe)
	require.Equal(t, TypeStringTooLong, fe.Type)
	require.Equal(t, map[string]any{"max_length": 5}, fe.Ctx)
}

func TestPyRepr(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in   any
		want string
	}{
		{"abc", `'abc'`},
		{"it's", `"it's"`},
		{`it's "x"`, `'it\'s "x"'`},
		{"a\\b", `'a\\b'`},
		{"tab\there\nnl", `'tab\there\nnl'`},
		{"\x01\x7f", `'\x01\x7f'`},
		{"\u200b", `'\u200b'`},
		{"café 😀", `'café 😀'`},
		{nil, "None"},
		{true, "True"},
		{false, "False"},
		{json.Number("5"), "5"},
		{json.Number("5.0"), "5.0"},
		{json.Number("1e20"), "1e+20"},
		{2.5, "2.5"},
		{[]any{"a", json.Number("1")}, "['a', 1]"},
		{[]string{"b", "c"}, "['b', 'c']"},
		{map[string]any{"b": nil, "a": "x"}, "{'a': 'x', 'b': None}"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, pyRepr(tt.in), "%#v", tt.in)
	}
}

func TestPyStrip(t *testing.T) {
	t.Parallel()
	require.Equal(t, "x y", pyStrip(" \t\n\x1c\u00a0x y\u3000\r"))
}
