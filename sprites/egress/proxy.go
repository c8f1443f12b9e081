package egress

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of ProxyConfig.
const (
	DefaultMaxConns         = 64
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
	DefaultIdleTimeout      = 10 * time.Minute
)

const (
	// maxHeaderBytes bounds an HTTP request head (request line + headers).
	maxHeaderBytes = 64 << 10
	// relayBuffer is the buffer of each direction of a relayed connection.
	relayBuffer = 32 << 10
	// maxLoggedDenials bounds how many denials one proxy logs (the log is a
	// host file a sandbox must not be able to fill).
	maxLoggedDenials = 64
)

// ErrDenied is wrapped by the errors of connections the policy refuses.
var ErrDenied = errors.New("not allowed by the sandbox's network policy")

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	// Allow says whether a host name may be connected to (a Matcher's
	// Allowed). Raw IP addresses are always refused.
	Allow func(host string) bool
	// HostAddrs are this host's own addresses, refused like [Blocked].
	HostAddrs []netip.Addr
	// Override maps a lower-case host name to the address ("ip:port")
	// dialled instead of resolving it, skipping the address checks. It is
	// for tests, which reach a loopback test server by name.
	Override map[string]string
	// Resolver resolves names on the host; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// MaxConns caps the connections served at once; more are closed at
	// once. Zero means DefaultMaxConns.
	MaxConns int
	// HandshakeTimeout bounds reading a request and dialling its target.
	HandshakeTimeout time.Duration
	// DialTimeout bounds one connection attempt to the target.
	DialTimeout time.Duration
	// IdleTimeout ends a relayed connection with no traffic either way.
	IdleTimeout time.Duration
	// Logger receives denials and errors; nil discards them.
	Logger *slog.Logger
}

// Proxy is an HTTP (CONNECT and absolute-URI requests) and SOCKS5
// (CONNECT, names only) proxy on one port that connects, from the host,
// only to names its policy allows, and only to the addresses they resolve
// to that are not blocked.
type Proxy struct {
	cfg    ProxyConfig
	slots  chan struct{}
	denied atomic.Int64

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewProxy returns a proxy for cfg.
func NewProxy(cfg ProxyConfig) *Proxy {
	if cfg.Allow == nil {
		cfg.Allow = func(string) bool { return false }
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, slots: make(chan struct{}, cfg.MaxConns), conns: map[net.Conn]struct{}{}}
}

// Serve accepts connections on ln until Close. It returns nil after
// Close and the listener's error otherwise.
func (p *Proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.lns = append(p.lns, ln)
	p.mu.Unlock()
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return nil
			}
			if isTimeout(err) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("egress proxy: accept: %w", err)
		}
		backoff = 0
		select {
		case p.slots <- struct{}{}:
		default:
			p.logDenial("connection limit reached", "limit", p.cfg.MaxConns)
			c.Close()
			continue
		}
		if !p.track(c) {
			<-p.slots
			c.Close()
			return nil
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.slots }()
			defer p.untrack(c)
			p.serveConn(c)
		}()
	}
}

// Close stops every listener and connection and waits for their
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for _, ln := range p.lns {
		ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) logDenial(msg string, args ...any) {
	switch n := p.denied.Add(1); {
	case n <= maxLoggedDenials:
		p.cfg.Logger.Info("egress: "+msg, args...)
	case n == maxLoggedDenials+1:
		p.cfg.Logger.Info("egress: further denials are not logged")
	}
}

// serveConn serves one client connection: SOCKS5 when its first byte is
// 5, HTTP otherwise.
func (p *Proxy) serveConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	lr := &io.LimitedReader{R: c, N: maxHeaderBytes}
	br := bufio.NewReaderSize(lr, 4096)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	defer cancel()
	if first[0] == 5 {
		p.serveSOCKS(ctx, c, br)
		return
	}
	p.serveHTTP(ctx, c, br, lr)
}

// serveHTTP handles one HTTP request: CONNECT host:port tunnels, any
// other method with an absolute http:// URI is forwarded (with
// "Connection: close") and its response relayed.
func (p *Proxy) serveHTTP(ctx context.Context, c net.Conn, br *bufio.Reader, lr *io.LimitedReader) {
	req, err := http.ReadRequest(br)
	if err != nil {
		if lr.N <= 0 {
			writeHTTPError(c, http.StatusRequestHeaderFieldsTooLarge, "request head too large")
		} else {
			writeHTTPError(c, http.StatusBadRequest, "malformed proxy request")
		}
		return
	}
	var host, port string
	if req.Method == http.MethodConnect {
		host, port, err = net.SplitHostPort(req.URL.Host)
		if err != nil {
			host, port = req.URL.Host, "443"
		}
	} else {
		if req.URL.Scheme != "http" || req.URL.Host == "" {
			writeHTTPError(c, http.StatusBadRequest, "only CONNECT and absolute http:// requests are proxied")
			return
		}
		host, port = req.URL.Hostname(), req.URL.Port()
		if port == "" {
			port = "80"
		}
	}
	up, err := p.dial(ctx, host, port)
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, ErrDenied) {
			status = http.StatusForbidden
		}
		writeHTTPError(c, status, err.Error())
		return
	}
	defer up.Close()
	if req.Method == http.MethodConnect {
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
	} else {
		// The body follows the head: lift the head's limit.
		lr.N = 1 << 62
		req.Header.Del("Proxy-Authorization")
		req.Header.Del("Proxy-Connection")
		req.Host = req.URL.Host
		req.Close = true
		req.RequestURI = ""
		// The body is read from the client while it is written: both sides
		// get IdleTimeout for the whole request.
		_ = c.SetDeadline(time.Now().Add(p.cfg.IdleTimeout))
		_ = up.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
		if err := req.Write(up); err != nil {
			return
		}
	}
	// Bytes the client sent after the head (a TLS hello) go first.
	lr.N = 1 << 62
	p.relay(c, br, up)
}

func writeHTTPError(c net.Conn, status int, msg string) {
	body := "aod egress proxy: " + msg + "\n"
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// SOCKS5 reply codes (RFC 1928).
const (
	socksSucceeded        = 0
	socksGeneralFailure   = 1
	socksNotAllowed       = 2
	socksHostUnreachable  = 4
	socksCmdNotSupported  = 7
	socksAddrNotSupported = 8
)

// serveSOCKS handles a SOCKS5 CONNECT without authentication to a domain
// name (ATYP 3). Requests for raw addresses are refused as not allowed.
func (p *Proxy) serveSOCKS(ctx context.Context, c net.Conn, br *bufio.Reader) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		_, _ = c.Write([]byte{5, 0xff})
		return
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return
	}
	var req [4]byte // VER CMD RSV ATYP
	if _, err := io.ReadFull(br, req[:]); err != nil {
		return
	}
	reply := func(code byte) {
		_, _ = c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
	}
	if req[0] != 5 {
		return
	}
	if req[1] != 1 {
		reply(socksCmdNotSupported)
		return
	}
	var host string
	switch req[3] {
	case 1, 4: // IPv4, IPv6: read them to answer properly, then refuse
		n := 4
		if req[3] == 4 {
			n = 16
		}
		addr := make([]byte, n+2)
		if _, err := io.ReadFull(br, addr); err != nil {
			return
		}
		ip, _ := netip.AddrFromSlice(addr[:n])
		p.logDenial("raw address refused", "addr", ip.String(), "via", "socks5")
		reply(socksNotAllowed)
		return
	case 3:
		l, err := br.ReadByte()
		if err != nil {
			return
		}
		name := make([]byte, l)
		if _, err := io.ReadFull(br, name); err != nil {
			return
		}
		host = string(name)
	default:
		reply(socksAddrNotSupported)
		return
	}
	var portb [2]byte
	if _, err := io.ReadFull(br, portb[:]); err != nil {
		return
	}
	port := strconv.Itoa(int(binary.BigEndian.Uint16(portb[:])))
	up, err := p.dial(ctx, host, port)
	if err != nil {
		if errors.Is(err, ErrDenied) {
			reply(socksNotAllowed)
		} else {
			reply(socksHostUnreachable)
		}
		return
	}
	defer up.Close()
	reply(socksSucceeded)
	p.relay(c, br, up)
}

// dial connects to host:port from the host after the policy checks.
func (p *Proxy) dial(ctx context.Context, host, port string) (net.Conn, error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("bad port %q", port)
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		p.logDenial("raw address refused", "addr", host)
		return nil, fmt.Errorf("raw address %s: %w", host, ErrDenied)
	}
	if !p.cfg.Allow(host) {
		p.logDenial("host refused", "host", host)
		return nil, fmt.Errorf("host %q: %w", host, ErrDenied)
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	if to, ok := p.cfg.Override[host]; ok {
		return d.DialContext(ctx, "tcp", to)
	}
	ips, err := p.cfg.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	var errs []error
	tried := 0
	for _, ip := range ips {
		if IsBlocked(ip, p.cfg.HostAddrs) {
			continue // DNS rebinding to the host, a private or link-local address
		}
		tried++
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	if tried == 0 {
		p.logDenial("host resolves only to blocked addresses", "host", host, "addrs", fmt.Sprint(ips))
		return nil, fmt.Errorf("host %q resolves only to blocked addresses: %w", host, ErrDenied)
	}
	return nil, fmt.Errorf("connect %s: %w", host, errors.Join(errs...))
}

// relay copies between the client (whose buffered bytes in br go first)
// and up. When the client ends its side, up's write side is shut and the
// answer still flows; when up ends (or anything fails, or neither
// direction has moved for IdleTimeout) both connections close.
func (p *Proxy) relay(c net.Conn, br *bufio.Reader, up net.Conn) {
	_ = c.SetDeadline(time.Time{})
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	closeBoth := func() {
		c.Close()
		up.Close()
	}
	cp := func(dst net.Conn, src io.Reader, srcConn net.Conn, halfClose bool) {
		defer wg.Done()
		buf := make([]byte, relayBuffer)
		for {
			_ = srcConn.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				_ = dst.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					closeBoth()
					return
				}
			}
			switch {
			case err == nil:
			case errors.Is(err, io.EOF) && halfClose:
				if tc, ok := dst.(interface{ CloseWrite() error }); ok && tc.CloseWrite() == nil {
					return
				}
				closeBoth()
				return
			case isTimeout(err) && time.Since(time.Unix(0, last.Load())) < p.cfg.IdleTimeout:
				// The other direction is busy.
			default:
				closeBoth()
				return
			}
		}
	}
	wg.Add(2)
	go cp(up, br, c, true)
	go cp(c, up, up, false)
	wg.Wait()
	closeBoth()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
