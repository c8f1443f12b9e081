package actors

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTextDecoder(t *testing.T) {
	t.Parallel()
	smile := []byte("😀") // 4 bytes
	tests := []struct {
		name   string
		chunks [][]byte
		want   []string
	}{
		{"ascii", [][]byte{[]byte("ab"), []byte("c")}, []string{"ab", "c"}},
		{"split astral", [][]byte{append([]byte("x"), smile[:2]...), smile[2:]}, []string{"x", "😀"}},
		{"split into single bytes", [][]byte{smile[:1], smile[1:2], smile[2:3], smile[3:]}, []string{"", "", "", "😀"}},
		{"invalid byte", [][]byte{{'a', 0xff, 'b'}}, []string{"a\ufffdb"}},
		{"nul", [][]byte{{'a', 0, 'b'}}, []string{"a\ufffdb"}},
		{"lone continuation", [][]byte{{0x80, 'z'}}, []string{"\ufffdz"}},
	}
	for _, tt := range tests {
		var d textDecoder
		var got []string
		var total int
		for _, c := range tt.chunks {
			got = append(got, d.decode(c))
			total += len(c)
		}
		require.Equal(t, tt.want, got, tt.name)
		require.EqualValues(t, total, d.consumed, tt.name)
	}
	var d textDecoder
	require.Equal(t, "", d.decode(smile[:3]))
	require.EqualValues(t, 0, d.consumed, "carried bytes are not consumed")
	require.Equal(t, "\ufffd\ufffd\ufffd", d.flush(), "each byte of a truncated sequence is replaced")
	require.EqualValues(t, 3, d.consumed)
}
