package egress

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
)

func TestMatcher(t *testing.T) {
	t.Parallel()
	aod := NewMatcher(sprites.NetworkPolicy{Rules: []sprites.Rule{
		{Domain: "api.github.com", Action: "allow"},
		{Domain: "*.example.com", Action: "allow"},
		{Domain: "bad.example.com", Action: "deny"},
		{Domain: "*.deep.example.com", Action: "deny"},
		{Domain: "ok.deep.example.com", Action: "allow"},
		{Domain: "*", Action: "deny"},
	}})
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"api.github.com", true},
		{"API.GitHub.com.", true},
		{"github.com", false},
		{"x.api.github.com", false},
		{"a.example.com", true},
		{"a.b.example.com", true},
		{"example.com", false},        // the wildcard does not cover its apex
		{"evilexample.com", false},    // nor a name that merely ends the same
		{"a.example.com.evil", false}, // nor one that only starts the same
		{"bad.example.com", false},    // exact beats wildcard
		{"x.deep.example.com", false}, // the longer wildcard wins
		{"ok.deep.example.com", true}, // exact beats the longer wildcard
		{"other.org", false},          // "*" deny
		{"", false},
		{"*.example.com", false},
		{"a b.example.com", false},
	} {
		require.Equal(t, tt.want, aod.Allowed(tt.host), tt.host)
	}

	// A name no rule matches is denied; "*" allow allows everything.
	require.False(t, NewMatcher(sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "a.com", Action: "allow"}}}).Allowed("b.com"))
	require.True(t, NewMatcher(sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*", Action: "allow"}, {Domain: "b.com", Action: "deny"}}}).Allowed("c.com"))
	require.False(t, (&Matcher{}).Allowed("a.com"))

	defaults := NewMatcher(sprites.NetworkPolicy{Rules: []sprites.Rule{{Include: "defaults"}, {Domain: "*", Action: "deny"}}})
	for _, h := range []string{"github.com", "codeload.github.com", "registry.npmjs.org", "pypi.org", "api.anthropic.com", "api.openai.com"} {
		require.True(t, defaults.Allowed(h), h)
	}
	require.False(t, defaults.Allowed("example.org"))
	require.False(t, NewMatcher(sprites.NetworkPolicy{Rules: []sprites.Rule{{Include: "unknown"}}}).Allowed("github.com"))
}

func TestValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, Validate(sprites.NetworkPolicy{Rules: []sprites.Rule{
		{Domain: "a.com", Action: "allow"}, {Domain: "*.B.com", Action: "allow"}, {Include: "defaults"}, {Domain: "*", Action: "deny"}}}))
	for _, tt := range []struct {
		rule sprites.Rule
		want string
	}{
		{sprites.Rule{Domain: "bad domain", Action: "allow"}, `rule 0: invalid domain "bad domain"`},
		{sprites.Rule{Domain: "a.*.com", Action: "allow"}, `rule 0: invalid domain "a.*.com"`},
		{sprites.Rule{Domain: "a.com", Action: "permit"}, `rule 0: action must be allow or deny, not "permit"`},
		{sprites.Rule{Include: "everything"}, `rule 0: unknown include "everything" (known: "defaults")`},
		{sprites.Rule{Include: "defaults", Domain: "a.com"}, "rule 0: include cannot be combined with domain or action"},
	} {
		require.EqualError(t, Validate(sprites.NetworkPolicy{Rules: []sprites.Rule{tt.rule}}), tt.want)
	}
}

func TestIsBlocked(t *testing.T) {
	t.Parallel()
	host := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::2")}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"10.0.2.2", true}, {"10.0.2.3", true}, {"10.255.255.53", true},
		{"172.16.0.1", true}, {"172.31.255.255", true}, {"172.32.0.1", false},
		{"192.168.1.1", true}, {"100.64.0.1", true}, {"100.128.0.1", false},
		{"169.254.169.254", true}, {"127.0.0.1", true}, {"127.1.2.3", true}, {"0.0.0.0", true},
		{"224.0.0.1", true}, {"255.255.255.255", true},
		{"::1", true}, {"::", true}, {"fd00::1", true}, {"fc00::1", true}, {"fe80::1", true}, {"ff02::1", true},
		{"::ffff:10.0.0.1", true}, {"::ffff:127.0.0.1", true},
		{"192.0.2.2", true}, {"2001:db8::2", true}, // the host's own
		{"1.1.1.1", false}, {"140.82.112.3", false}, {"2606:4700::1111", false}, {"::ffff:1.1.1.1", false},
		{"192.0.2.3", false}, // a neighbour of the host's address that is not its own
	} {
		require.Equal(t, tt.want, IsBlocked(netip.MustParseAddr(tt.addr), host), tt.addr)
	}
}

// proxyHarness serves a Proxy on loopback with a test server reachable as
// "allowed.test" and "denied.test" (through Override), policy allowing
// allowed.test and localhost.
type proxyHarness struct {
	p        *Proxy
	addr     string
	upstream string
	requests atomic.Int64
}

func newProxyHarness(t *testing.T, mut func(*ProxyConfig)) *proxyHarness {
	t.Helper()
	h := &proxyHarness{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s body=%q proxy-auth=%q\n", r.Method, r.Host, r.URL.RequestURI(), body, r.Header.Get("Proxy-Authorization"))
	}))
	t.Cleanup(srv.Close)
	h.upstream = srv.Listener.Addr().String()
	m := NewMatcher(sprites.NetworkPolicy{Rules: []sprites.Rule{
		{Domain: "allowed.test", Action: "allow"}, {Domain: "localhost", Action: "allow"}, {Domain: "*", Action: "deny"}}})
	cfg := ProxyConfig{
		Allow:    m.Allowed,
		Override: map[string]string{"allowed.test": h.upstream, "denied.test": h.upstream},
	}
	if mut != nil {
		mut(&cfg)
	}
	h.p = NewProxy(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- h.p.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, h.p.Close())
		require.NoError(t, <-served)
	})
	return h
}

func (h *proxyHarness) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c
}

// connect sends a CONNECT and returns the status line and the reader.
func (h *proxyHarness) connect(t *testing.T, target string) (string, net.Conn, *bufio.Reader) {
	t.Helper()
	c := h.dial(t)
	_, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return resp.Status + ": " + string(body), c, br
	}
	return resp.Status, c, br
}

func TestProxyHTTP(t *testing.T) {
	t.Parallel()
	h := newProxyHarness(t, nil)

	status, c, br := h.connect(t, "allowed.test:443")
	require.Equal(t, "200 Connection established", status)
	_, err := io.WriteString(c, "GET /in-tunnel HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, "GET allowed.test /in-tunnel body=\"\" proxy-auth=\"\"\n", string(body))

	// Forwarded absolute-URI request, with a body; the proxy's own
	// headers are not passed on and Host is the URL's.
	c = h.dial(t)
	_, err = io.WriteString(c, "POST http://allowed.test/fwd?q=1 HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: Basic eDp5\r\nContent-Length: 5\r\n\r\nhello")
	require.NoError(t, err)
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	require.Equal(t, "POST allowed.test /fwd?q=1 body=\"hello\" proxy-auth=\"\"\n", string(body))

	before := h.requests.Load()
	for _, tt := range []struct{ target, want string }{
		{"denied.test:443", `403 Forbidden: aod egress proxy: host "denied.test": not allowed by the sandbox's network policy`},
		{"unknown.test:443", `403 Forbidden: aod egress proxy: host "unknown.test": not allowed by the sandbox's network policy`},
		{h.upstream, "403 Forbidden: aod egress proxy: raw address 127.0.0.1: not allowed by the sandbox's network policy"},
		{"[::1]:443", "403 Forbidden: aod egress proxy: raw address ::1: not allowed by the sandbox's network policy"},
		// Allowed, but the name resolves (on the host) to loopback only.
		{"localhost:80", `403 Forbidden: aod egress proxy: host "localhost" resolves only to blocked addresses: not allowed by the sandbox's network policy`},
		{"allowed.test:0", `502 Bad Gateway: aod egress proxy: bad port "0"`},
	} {
		status, _, _ := h.connect(t, tt.target)
		require.Equal(t, tt.want+"\n", status, tt.target)
	}
	c = h.dial(t)
	_, err = io.WriteString(c, "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n\r\n")
	require.NoError(t, err)
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, before, h.requests.Load(), "a denied request reached the server")
}

func TestProxySOCKS5(t *testing.T) {
	t.Parallel()
	h := newProxyHarness(t, nil)
	socks := func(t *testing.T, atyp byte, addr []byte, port uint16) (byte, net.Conn) {
		c := h.dial(t)
		_, err := c.Write([]byte{5, 1, 0})
		require.NoError(t, err)
		var sel [2]byte
		_, err = io.ReadFull(c, sel[:])
		require.NoError(t, err)
		require.Equal(t, [2]byte{5, 0}, sel)
		req := append([]byte{5, 1, 0, atyp}, addr...)
		req = binary.BigEndian.AppendUint16(req, port)
		_, err = c.Write(req)
		require.NoError(t, err)
		var rep [10]byte
		_, err = io.ReadFull(c, rep[:])
		require.NoError(t, err)
		return rep[1], c
	}
	name := func(n string) []byte { return append([]byte{byte(len(n))}, n...) }

	code, c := socks(t, 3, name("allowed.test"), 80)
	require.Equal(t, byte(socksSucceeded), code)
	_, err := io.WriteString(c, "GET /s HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	out, _ := io.ReadAll(c)
	require.Contains(t, string(out), "GET allowed.test /s")

	before := h.requests.Load()
	for _, tt := range []struct {
		what string
		atyp byte
		addr []byte
		want byte
	}{
		{"denied name", 3, name("denied.test"), socksNotAllowed},
		{"rebinding to loopback", 3, name("localhost"), socksNotAllowed},
		{"raw IPv4", 1, []byte{127, 0, 0, 1}, socksNotAllowed},
		{"raw IPv6", 4, netip.MustParseAddr("::1").AsSlice(), socksNotAllowed},
		{"unknown address type", 9, nil, socksAddrNotSupported},
	} {
		code, _ := socks(t, tt.atyp, tt.addr, 80)
		require.Equal(t, tt.want, code, tt.what)
	}
	require.Equal(t, before, h.requests.Load())

	// Only "no authentication" is offered; BIND is not supported.
	c = h.dial(t)
	_, err = c.Write([]byte{5, 1, 2})
	require.NoError(t, err)
	var sel [2]byte
	_, err = io.ReadFull(c, sel[:])
	require.NoError(t, err)
	require.Equal(t, [2]byte{5, 0xff}, sel)
	c = h.dial(t)
	_, err = c.Write([]byte{5, 1, 0, 5, 2, 0, 3, 1, 'a', 0, 80})
	require.NoError(t, err)
	var rep [12]byte
	_, err = io.ReadFull(c, rep[:])
	require.NoError(t, err)
	require.Equal(t, byte(socksCmdNotSupported), rep[3])
}

// TestProxyBounds: a silent client is dropped at the handshake deadline,
// an oversized request head is refused, and connections past the cap are
// closed at once while the others keep working.
func TestProxyBounds(t *testing.T) {
	t.Parallel()
	h := newProxyHarness(t, func(c *ProxyConfig) {
		c.HandshakeTimeout = 300 * time.Millisecond
		c.MaxConns = 2
	})

	t.Run("HandshakeDeadline", func(t *testing.T) {
		c := h.dial(t)
		start := time.Now()
		n, err := c.Read(make([]byte, 1))
		require.Equal(t, 0, n)
		require.ErrorIs(t, err, io.EOF, "the proxy should close a silent client")
		require.Less(t, time.Since(start), 5*time.Second)
	})

	t.Run("HeadTooLarge", func(t *testing.T) {
		c := h.dial(t)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		go func() {
			_, _ = io.WriteString(c, "CONNECT allowed.test:443 HTTP/1.1\r\nX: "+strings.Repeat("a", 2*maxHeaderBytes)+"\r\n\r\n")
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	})

	t.Run("ConnectionCap", func(t *testing.T) {
		// A proxy of its own: the connections above may still hold their
		// slots for a moment after the client saw them end.
		h := newProxyHarness(t, func(c *ProxyConfig) { c.MaxConns = 2 })
		// Two tunnels fill the cap (they stay open: relayed connections have
		// no handshake deadline)...
		for range 2 {
			status, _, _ := h.connect(t, "allowed.test:80")
			require.Equal(t, "200 Connection established", status)
		}
		// ...so a third is closed unanswered.
		c := h.dial(t)
		_, _ = io.WriteString(c, "CONNECT allowed.test:80 HTTP/1.1\r\n\r\n")
		n, err := c.Read(make([]byte, 1))
		require.Equal(t, 0, n)
		require.Error(t, err)
	})
}

// TestProxyRelay: a client that shuts its side after sending still gets
// the whole answer; an upstream that closes ends the client's connection
// even while the client keeps its side open.
func TestProxyRelay(t *testing.T) {
	t.Parallel()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { up.Close() })
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				hello := make([]byte, 5)
				if _, err := io.ReadFull(c, hello); err != nil {
					return
				}
				if string(hello) == "bye!\n" {
					_, _ = io.WriteString(c, "bye\n")
					return
				}
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d bytes\n", n+5)
			}()
		}
	}()
	h := newProxyHarness(t, func(c *ProxyConfig) {
		c.Override = map[string]string{"allowed.test": up.Addr().String()}
	})

	status, c, br := h.connect(t, "allowed.test:9")
	require.Equal(t, "200 Connection established", status)
	payload := strings.Repeat("x", 300<<10) // several relay buffers
	_, err = io.WriteString(c, payload)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	out, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("got %d bytes\n", len(payload)), string(out))

	status, c, br = h.connect(t, "allowed.test:9")
	require.Equal(t, "200 Connection established", status)
	_, err = io.WriteString(c, "bye!\n")
	require.NoError(t, err)
	out, err = io.ReadAll(br) // ends although this side stays open
	require.NoError(t, err)
	require.Equal(t, "bye\n", string(out))
}
