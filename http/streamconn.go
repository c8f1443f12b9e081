package http

import (
	"errors"
	"net"
	"strconv"
	"time"
)

// writePiece is the most one write call hands the kernel: a larger chunk
// is written in pieces, each with its own deadline.
const writePiece = 256 << 10

var crlf = []byte("\r\n")

var errShuttingDown = errors.New("http: server shutting down")

// chunkedConn writes an HTTP/1.1 response on a hijacked connection: the
// response head with the first chunk, then one chunk per flush, every write
// under a deadline. A client that stops reading makes a write miss its
// deadline; the stream then ends and its subscription is released.
type chunkedConn struct {
	conn     net.Conn
	timeout  time.Duration
	done     <-chan struct{} // closed on server shutdown: no more writes
	head     []byte          // the response head, sent with the first chunk
	deadline time.Time       // the write deadline last set
	hdr      [24]byte
	vec      [4][]byte
}

// rawConn unwraps fasthttp's hijacked connection: writes (and their
// deadlines) go straight to the socket, and writev is used where it can be.
func rawConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c
}

// chunk writes p as one HTTP chunk (p must not be empty).
func (w *chunkedConn) chunk(p []byte) error {
	hdr := strconv.AppendUint(w.hdr[:0], uint64(len(p)), 16)
	hdr = append(hdr, crlf...)
	first := p[:min(len(p), writePiece)]
	rest := p[len(first):]
	v := append(w.vec[:0], w.head, hdr, first)
	if len(rest) == 0 {
		v = append(v, crlf)
	}
	if err := w.writev(v); err != nil {
		return err
	}
	w.head = nil
	for len(rest) > 0 {
		piece := rest[:min(len(rest), writePiece)]
		rest = rest[len(piece):]
		v = append(w.vec[:0], piece)
		if len(rest) == 0 {
			v = append(v, crlf)
		}
		if err := w.writev(v); err != nil {
			return err
		}
	}
	return nil
}

// end writes the last chunk: the body is complete.
func (w *chunkedConn) end() error {
	return w.writev(append(w.vec[:0], w.head, []byte("0\r\n\r\n")))
}

func (w *chunkedConn) writev(v [][]byte) error {
	select {
	case <-w.done:
		return errShuttingDown
	default:
	}
	// Refresh the deadline only when it is over a second old: every write
	// still gets between timeout-1s and timeout, without a timer update
	// per write.
	if now := time.Now(); w.deadline.Sub(now) < w.timeout-time.Second || w.timeout <= time.Second {
		w.deadline = now.Add(w.timeout)
		if err := w.conn.SetWriteDeadline(w.deadline); err != nil {
			return err
		}
	}
	b := net.Buffers(v)
	_, err := b.WriteTo(w.conn)
	clear(v)
	return err
}
