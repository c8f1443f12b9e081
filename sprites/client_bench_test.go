package sprites_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"github.com/aodhq/aod/sprites"
)

// BenchmarkClientExecStream measures the client alone: a raw WebSocket
// server sends 64 MiB of stdout in 64 KiB frames from memory.
func BenchmarkClientExecStream(b *testing.B) {
	const total, chunk = 64 << 20, 64 << 10
	frame := sprites.EncodeFrame(sprites.FrameStdout, make([]byte, chunk))
	srv := rawServer(b, func(ctx context.Context, r *http.Request, c *websocket.Conn) {
		_, _, _ = c.Read(ctx) // stdin EOF
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"session_info","session_id":1}`))
		for sent := 0; sent < total; sent += chunk {
			if c.Write(ctx, websocket.MessageBinary, frame) != nil {
				return
			}
		}
		_ = c.Write(ctx, websocket.MessageBinary, []byte{3, 0})
		_ = c.Close(websocket.StatusNormalClosure, "")
	})
	client := sprites.NewClient(srv.URL, "tok")
	ctx := context.Background()
	b.SetBytes(total)
	for b.Loop() {
		ex, err := client.Exec(ctx, "sb", sprites.ExecRequest{Argv: []string{"x"}})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			ev, err := ex.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += len(ev.Data)
		}
		ex.Close()
		if n != total {
			b.Fatalf("got %d", n)
		}
	}
}
