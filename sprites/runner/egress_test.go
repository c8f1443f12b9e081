package runner

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
)

// countingListener accepts TCP connections on addr, answers "pong" and
// counts them. A connection the sandbox should not have made shows up in
// the count even if the sandbox's side of it failed later.
type countingListener struct {
	ln       net.Listener
	accepted atomic.Int64
}

func listenCounting(t *testing.T, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	c := &countingListener{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			_, _ = conn.Write([]byte("pong\n"))
			conn.Close()
		}
	}()
	return c
}

func (c *countingListener) port() string { return strconv.Itoa(c.ln.Addr().(*net.TCPAddr).Port) }

// tcpProbe is a bash script that connects to host:port, prints what the
// peer says and exits 0, or prints bash's error and exits non-zero.
func tcpProbe(host, port string) Spec {
	return Spec{Argv: []string{"timeout", "5", "bash", "-c",
		`exec 3<>/dev/tcp/` + host + `/` + port + ` || exit 7; head -n1 <&3`}}
}

func TestEgressUnrestricted(t *testing.T) {
	t.Parallel()
	ip := hostIPv4(t)
	ln := listenCounting(t, "0.0.0.0:0")
	b := setup(t, NetworkPrivate)

	// A sandbox on the host's network (AOD_LOCAL_NETWORK=host) listening on
	// all interfaces: another sandbox's service.
	other := setup(t, NetworkHost)
	otherPort := strconv.Itoa(freePort(t))
	srv, err := other.r.Start(t.Context(), other.name, Spec{Argv: []string{"python3", "-c",
		`import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", ` + otherPort + `)); s.listen(); print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"other-sandbox\n"); c.close()`}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.stop(t.Context()) })
	waitOutput(t, srv, "listening")

	for _, tt := range []struct{ what, host, port string }{
		{"the host's non-loopback address", ip, ln.port()},
		{"127.0.0.1 (must be the sandbox's own loopback)", "127.0.0.1", ln.port()},
		{"slirp's gateway 10.0.2.2", "10.0.2.2", ln.port()},
		{"another sandbox's listener via the host address", ip, otherPort},
		{"another sandbox's listener via 10.0.2.2", "10.0.2.2", otherPort},
	} {
		res := run(t, b.r, b.name, tcpProbe(tt.host, tt.port))
		require.NotEqual(t, 0, res.code, "unrestricted sandbox reached %s (%s:%s): stdout %q", tt.what, tt.host, tt.port, res.stdout)
	}
	require.Zero(t, ln.accepted.Load(), "the host listener on 0.0.0.0:%s accepted connections from the sandbox", ln.port())
}

func TestEgressAllowList(t *testing.T) {
	t.Parallel()
	ip := hostIPv4(t)
	ln := listenCounting(t, "0.0.0.0:0")
	b := setup(t, NetworkPrivate)
	require.NoError(t, b.r.SetPolicy(b.name, sprites.NetworkPolicy{Rules: []sprites.Rule{
		{Domain: "allowed.test", Action: "allow"}, {Domain: "*", Action: "deny"}}}))

	// Direct TCP, bypassing the proxy.
	res := run(t, b.r, b.name, tcpProbe(ip, ln.port()))
	require.NotEqual(t, 0, res.code, "allow-list sandbox reached %s:%s directly: %q", ip, ln.port(), res.stdout)
	// DNS.
	res = run(t, b.r, b.name, Spec{Argv: []string{"timeout", "5", "getent", "hosts", "deb.debian.org"}})
	require.NotEqual(t, 0, res.code, "allow-list sandbox resolved a name: %q", res.stdout)
	// Only lo.
	res = run(t, b.r, b.name, sh(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '`))
	require.Equal(t, "lo\n", res.stdout)
	// The proxy answers inside.
	res = run(t, b.r, b.name, Spec{Argv: []string{"timeout", "5", "bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/3128 && echo connected`}})
	require.Equal(t, "connected\n", res.stdout, "the proxy does not listen inside: %+v", res)
	res = run(t, b.r, b.name, sh(`env | grep -i _proxy= | sort`))
	require.Contains(t, res.stdout, "HTTPS_PROXY=http://127.0.0.1:3128\n")
	require.Zero(t, ln.accepted.Load())
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitOutput waits until p's stdout contains want.
func waitOutput(t *testing.T, p *Proc, want string) {
	t.Helper()
	ctx, cancel := contextWithTestTimeout(t)
	defer cancel()
	var out []byte
	err := p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
		if ev.Exited {
			return errExitedEarly
		}
		out = append(out, ev.Data...)
		if ev.Stream == sprites.Stdout && containsLine(out, want) {
			return errFound
		}
		return nil
	})
	require.ErrorIs(t, err, errFound, "waiting for %q, got %q", want, out)
}

var (
	errFound       = errors.New("found")
	errExitedEarly = errors.New("exited before the expected output")
)

func contextWithTestTimeout(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), testTimeout)
}

func containsLine(out []byte, line string) bool {
	return bytes.Contains(append([]byte("\n"), out...), []byte("\n"+line+"\n"))
}
