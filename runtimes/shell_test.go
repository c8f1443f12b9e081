package runtimes

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	t.Parallel()

	// Expected values are Python 3's shlex.quote output.
	cases := []struct{ in, want string }{
		{"", "''"},
		{"abc", "abc"},
		{"a b", "'a b'"},
		{"it's", `'it'"'"'s'`},
		{"a\nb", "'a\nb'"},
		{"@%+=:,./-_", "@%+=:,./-_"},
		{"$HOME", "'$HOME'"},
		{"a*b", "'a*b'"},
		{"~x", "'~x'"},
		{"é", "'é'"},
		{`"q"`, `'"q"'`},
		{"'", `''"'"''`},
		{"x=1", "x=1"},
		{"tab\there", "'tab\there'"},
		{`back\slash`, `'back\slash'`},
		{"!bang", "'!bang'"},
		{"semi;colon", "'semi;colon'"},
		{"a&b", "'a&b'"},
		{"{brace}", "'{brace}'"},
		{"--flag", "--flag"},
		{"0", "0"},
	}
	for _, c := range cases {
		require.Equal(t, c.want, ShellQuote(c.in), "%q", c.in)
		require.Equal(t, c.in, shellUnquote(t, ShellQuote(c.in)))
	}
}

func FuzzShellQuote(f *testing.F) {
	for _, s := range []string{"", "a b", "it's", "'''", "$(rm -rf /)", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		require.Equal(t, s, shellUnquote(t, ShellQuote(s)))
	})
}

// shellUnquote parses one shell word made of unquoted safe characters,
// single-quoted runs and double-quoted runs without expansions, which is
// all ShellQuote produces.
func shellUnquote(t *testing.T, w string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(w); {
		switch c := w[i]; c {
		case '\'':
			j := strings.IndexByte(w[i+1:], '\'')
			require.GreaterOrEqual(t, j, 0, "unterminated single quote in %q", w)
			b.WriteString(w[i+1 : i+1+j])
			i += j + 2
		case '"':
			j := strings.IndexByte(w[i+1:], '"')
			require.GreaterOrEqual(t, j, 0, "unterminated double quote in %q", w)
			inner := w[i+1 : i+1+j]
			require.NotContains(t, inner, "$")
			require.NotContains(t, inner, "`")
			require.NotContains(t, inner, `\`)
			b.WriteString(inner)
			i += j + 2
		default:
			require.True(t, shellSafe(c), "unquoted unsafe byte %q in %q", c, w)
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}
