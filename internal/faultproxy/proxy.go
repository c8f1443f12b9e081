// Package faultproxy is a TCP proxy that a test controls, to put network
// faults between a client (an aod node) and a server (Postgres): pass
// bytes through, cut the path by resetting every connection and refusing
// new ones, or blackhole it by holding connections open while forwarding
// nothing, then restore it.
//
// The proxy is bounded: it holds at most Options.MaxConns connections
// (more are reset at once), copies through fixed-size buffers, and every
// write to either side has a deadline, so a peer that stops reading cannot
// wedge it.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Mode is the state of the path.
type Mode int

const (
	// Pass forwards bytes both ways.
	Pass Mode = iota
	// Reset closes every connection with a TCP RST and resets each new one
	// as soon as it is accepted: the client sees "connection reset" or
	// "connection refused"-like failures at once.
	Reset
	// Blackhole accepts connections and keeps them open but forwards
	// nothing in either direction: the client sees silence until its own
	// deadline. Restore closes the connections held meanwhile (as a
	// middlebox that lost their state would), so nothing waits past the
	// outage.
	Blackhole
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Reset:
		return "reset"
	case Blackhole:
		return "blackhole"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Options configure a Proxy.
type Options struct {
	// Listen is the listen address; default "127.0.0.1:0".
	Listen string
	// MaxConns bounds the connections held at once; default 256.
	MaxConns int
	// DialTimeout bounds the dial to the target; default 5s.
	DialTimeout time.Duration
	// WriteTimeout bounds each write to either side; default 10s.
	WriteTimeout time.Duration
}

// Proxy forwards TCP connections from its listen address to a target.
type Proxy struct {
	target string
	opts   Options
	ln     net.Listener

	mu     sync.Mutex
	mode   Mode
	conns  map[*pair]struct{}
	closed bool
	// wake is closed and replaced when the mode changes, so blackholed
	// copies can resume or end.
	wake chan struct{}

	wg sync.WaitGroup
}

// pair is one client connection and its upstream.
type pair struct {
	client, upstream net.Conn
	once             sync.Once
}

// close ends both sides; with reset the client side gets a TCP RST.
func (p *pair) close(reset bool) {
	p.once.Do(func() {
		if reset {
			if tc, ok := p.client.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			if tc, ok := p.upstream.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		_ = p.client.Close()
		if p.upstream != nil {
			_ = p.upstream.Close()
		}
	})
}

// New starts a proxy to target ("host:port").
func New(target string, opts Options) (*Proxy, error) {
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 256
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{target: target, opts: opts, ln: ln, conns: map[*pair]struct{}{}, wake: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address ("127.0.0.1:port").
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode reports the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Conns reports how many connections the proxy holds.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut breaks the path in mode m (Reset or Blackhole).
func (p *Proxy) Cut(m Mode) {
	if m != Reset && m != Blackhole {
		panic("faultproxy: Cut needs Reset or Blackhole")
	}
	p.setMode(m)
}

// Restore lets bytes through again. Connections held while blackholed are
// closed; new connections pass.
func (p *Proxy) Restore() { p.setMode(Pass) }

func (p *Proxy) setMode(m Mode) {
	p.mu.Lock()
	prev := p.mode
	p.mode = m
	var victims []*pair
	if m == Reset || (prev == Blackhole && m == Pass) {
		for c := range p.conns {
			victims = append(victims, c)
			delete(p.conns, c)
		}
	}
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
	for _, c := range victims {
		c.close(true)
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var all []*pair
	for c := range p.conns {
		all = append(all, c)
	}
	p.conns = map[*pair]struct{}{}
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range all {
		c.close(true)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient accept errors (EMFILE…): back off briefly.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	pr := &pair{client: client}
	p.mu.Lock()
	mode, full, closed := p.mode, len(p.conns) >= p.opts.MaxConns, p.closed
	if mode == Reset || full || closed {
		p.mu.Unlock()
		pr.close(true)
		return
	}
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	defer p.forget(pr)
	if mode == Blackhole {
		// Hold the connection, forward nothing; Restore or Close ends it.
		if !p.waitPass(pr) {
			return
		}
	}
	up, err := net.DialTimeout("tcp", p.target, p.opts.DialTimeout)
	if err != nil {
		pr.close(true)
		return
	}
	p.mu.Lock()
	if _, ok := p.conns[pr]; !ok {
		p.mu.Unlock()
		_ = up.Close()
		pr.close(true)
		return
	}
	pr.upstream = up
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.copy(pr, up, client); done <- struct{}{} }()
	go func() { p.copy(pr, client, up); done <- struct{}{} }()
	<-done
	pr.close(false)
	<-done
}

// waitPass blocks a blackholed, not yet forwarded connection until the
// mode changes; false means the connection was closed meanwhile.
func (p *Proxy) waitPass(pr *pair) bool {
	for {
		p.mu.Lock()
		_, held := p.conns[pr]
		mode, wake := p.mode, p.wake
		p.mu.Unlock()
		if !held {
			return false
		}
		if mode == Pass {
			return true
		}
		<-wake
	}
}

func (p *Proxy) forget(pr *pair) {
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
	pr.close(false)
}

// copy forwards src to dst through a fixed buffer. While blackholed it
// forwards nothing: read bytes are held until the mode changes, at which
// point the pair is closed (Restore and Reset close every held pair).
func (p *Proxy) copy(pr *pair, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode, wake := p.mode, p.wake
			p.mu.Unlock()
			if mode == Blackhole {
				<-wake // the pair is closed by the mode change or Close
				return
			}
			_ = dst.SetWriteDeadline(time.Now().Add(p.opts.WriteTimeout))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}
