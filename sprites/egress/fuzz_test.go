package egress

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzProxyHandshake feeds arbitrary client bytes (hostile: they come from
// inside a sandbox) to the proxy's connection handler, with a policy that
// allows nothing so nothing is ever dialled. It must neither panic nor
// hang past its handshake deadline.
func FuzzProxyHandshake(f *testing.F) {
	for _, seed := range []string{
		"CONNECT a.test:443 HTTP/1.1\r\n\r\n",
		"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"\x05\x01\x00\x05\x01\x00\x03\x06a.test\x00\x50",
		"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50",
		"\x05\xff",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p := NewProxy(ProxyConfig{HandshakeTimeout: time.Second})
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			p.serveConn(server)
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = client.Write(in)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the proxy did not finish with input %q", in)
		}
	})
}
