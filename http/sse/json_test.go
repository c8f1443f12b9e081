package sse

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestAppendString(t *testing.T) {
	t.Parallel()

	// Expected values are Python 3's json.dumps(s) with default arguments.
	tests := []struct {
		in   string
		want string
	}{
		{"", `""`},
		{"plain ascii 123", `"plain ascii 123"`},
		{"\x00", `"\u0000"`},
		{"\x01", `"\u0001"`},
		{"\x02", `"\u0002"`},
		{"\x03", `"\u0003"`},
		{"\x04", `"\u0004"`},
		{"\x05", `"\u0005"`},
		{"\x06", `"\u0006"`},
		{"\x07", `"\u0007"`},
		{"\x08", `"\b"`},
		{"\x09", `"\t"`},
		{"\x0a", `"\n"`},
		{"\x0b", `"\u000b"`},
		{"\x0c", `"\f"`},
		{"\x0d", `"\r"`},
		{"\x0e", `"\u000e"`},
		{"\x0f", `"\u000f"`},
		{"\x10", `"\u0010"`},
		{"\x11", `"\u0011"`},
		{"\x12", `"\u0012"`},
		{"\x13", `"\u0013"`},
		{"\x14", `"\u0014"`},
		{"\x15", `"\u0015"`},
		{"\x16", `"\u0016"`},
		{"\x17", `"\u0017"`},
		{"\x18", `"\u0018"`},
		{"\x19", `"\u0019"`},
		{"\x1a", `"\u001a"`},
		{"\x1b", `"\u001b"`},
		{"\x1c", `"\u001c"`},
		{"\x1d", `"\u001d"`},
		{"\x1e", `"\u001e"`},
		{"\x1f", `"\u001f"`},
		{`"`, `"\""`},
		{`\`, `"\\"`},
		{"/", `"/"`},
		{"\x7f", `"\u007f"`},
		{"\u0080", `"\u0080"`},
		{"é", `"\u00e9"`},
		{"\u2028", `"\u2028"`},
		{"\u2029", `"\u2029"`},
		{"\ufeff", `"\ufeff"`},
		{"\ufffd", `"\ufffd"`},
		{"\uffff", `"\uffff"`},
		{"\U0001F600", `"\ud83d\ude00"`},
		{"\U0010FFFF", `"\udbff\udfff"`},
		{"<>&'", `"<>&'"`},
		{" ~", `" ~"`},
		{"café 😀 <b>&\n", `"caf\u00e9 \ud83d\ude00 <b>&\n"`},
		{"a\"b\\c/d\te", `"a\"b\\c/d\te"`},
		{"\r\n", `"\r\n"`},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, string(AppendString(nil, tt.in)), "json.dumps(%q)", tt.in)
		require.Equal(t, "prefix"+tt.want, string(AppendString([]byte("prefix"), tt.in)), "appends to %q", tt.in)
	}
}

func TestAppendStringInvalidUTF8(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in   string
		want string
	}{
		{"\xff", `"\ufffd"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xc3", `"\ufffd"`},                               // truncated sequence
		{"\xc3(", `"\ufffd("`},                             // bad continuation
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},           // encoded surrogate: three invalid bytes
		{"\xc0\xaf", `"\ufffd\ufffd"`},                     // overlong '/'
		{"\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`}, // above U+10FFFF
		{"ok\xe2\x82", `"ok\ufffd\ufffd"`},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, string(AppendString(nil, tt.in)), "%q", tt.in)
	}
}

func TestAppendObject(t *testing.T) {
	t.Parallel()

	// json.dumps({"a": {"b": None, "c": True}, "d": 1, "f": False, "g": -5, "h": "x"})
	const want = `{"a": {"b": null, "c": true}, "d": 1, "f": false, "g": -5, "h": "x"}`
	b := append([]byte(nil), '{')
	b = AppendKey(b, "a")
	b = append(b, '{')
	b = AppendKey(b, "b")
	b = AppendNull(b)
	b = AppendKey(b, "c")
	b = AppendBool(b, true)
	b = append(b, '}')
	b = AppendKey(b, "d")
	b = AppendInt(b, 1)
	b = AppendKey(b, "f")
	b = AppendBool(b, false)
	b = AppendKey(b, "g")
	b = AppendInt(b, -5)
	b = AppendKey(b, "h")
	b = AppendString(b, "x")
	b = append(b, '}')
	require.Equal(t, want, string(b))

	require.Equal(t, `{}`, string(append(append([]byte(nil), '{'), '}')))
	require.Equal(t, `{"\u00e9": 9223372036854775807}`,
		string(append(AppendInt(AppendKey([]byte("{"), "é"), 1<<63-1), '}')))
}

// pyDumps is a slow, obviously correct model of Python's json.dumps for a
// str, applied to the runes of s (an invalid byte is one U+FFFD).
func pyDumps(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r >= ' ' && r <= '~':
			b.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "café 😀 <b>&\n", "\x00\x1f\x7f\u0080\u2028\uffff\U0010FFFF", `"\/`, "\xff\xc3", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		for i, c := range out {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("AppendString(%q) has byte %#x at %d: %s", s, c, i, out)
			}
		}
		if want := pyDumps(s); string(out) != want {
			t.Fatalf("AppendString(%q) = %s, Python writes %s", s, out, want)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("AppendString(%q) = %s: not JSON: %v", s, out, err)
		}
		want := s
		if !utf8.ValidString(s) {
			want = string([]rune(s)) // each invalid byte becomes U+FFFD
		}
		if got != want {
			t.Fatalf("AppendString(%q) = %s decodes to %q", s, out, got)
		}
	})
}
