package sse

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadEvent(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		stream string
		want   []Frame
		err    error
	}{
		{"Empty", "", nil, io.EOF},
		{"DataOnly", "data: {}\n\n", []Frame{{Data: "{}"}}, io.EOF},
		{"IDAndData", "id: 41\ndata: {\"a\": 1}\n\n", []Frame{{ID: "41", Data: `{"a": 1}`}}, io.EOF},
		{"Heartbeat", ": heartbeat\n\n", []Frame{{Comment: "heartbeat"}}, io.EOF},
		{"NoSpaceAfterColon", "id:7\ndata:x\n\n", []Frame{{ID: "7", Data: "x"}}, io.EOF},
		{"OnlyOneSpaceStripped", "data:  x \n\n", []Frame{{Data: " x "}}, io.EOF},
		{"MultiLineData", "data: a\ndata: b\n\n", []Frame{{Data: "a\nb"}}, io.EOF},
		{"CRLF", "id: 1\r\ndata: x\r\n\r\n: hb\r\n\r\n", []Frame{{ID: "1", Data: "x"}, {Comment: "hb"}}, io.EOF},
		{"EventAndUnknownField", "event: msg\nretry: 10\ndata: x\n\n", []Frame{{Event: "msg", Data: "x"}}, io.EOF},
		{"LeadingBlankLines", "\n\r\ndata: x\n\n", []Frame{{Data: "x"}}, io.EOF},
		{"Sequence", "data: a\n\n: heartbeat\n\nid: 2\ndata: b\n\n", []Frame{{Data: "a"}, {Comment: "heartbeat"}, {ID: "2", Data: "b"}}, io.EOF},
		{"TruncatedFrame", "id: 1\ndata: x\n", nil, io.ErrUnexpectedEOF},
		{"TruncatedLine", "data: a\n\ndata: x", []Frame{{Data: "a"}}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bufio.NewReader(strings.NewReader(tt.stream))
			for _, want := range tt.want {
				f, err := ReadEvent(r)
				require.NoError(t, err)
				require.Equal(t, want, f)
			}
			_, err := ReadEvent(r)
			require.ErrorIs(t, err, tt.err)
		})
	}
}

func TestDecodeData(t *testing.T) {
	t.Parallel()

	m, err := DecodeData(Frame{Data: `{"type": "output", "id": 47, "data": "caf\u00e9 \ud83d\ude00", "turn": null}`})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"type": "output", "id": float64(47), "data": "café 😀", "turn": nil}, m)

	for _, data := range []string{"", "null", "[]", `"x"`, "1", "{", `{"a": 1} {}`, `{"a": 1}x`} {
		_, err := DecodeData(Frame{Data: data})
		require.Error(t, err, "data %q", data)
	}
}
