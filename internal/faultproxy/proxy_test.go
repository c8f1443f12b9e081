package faultproxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echoServer echoes each line back.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, opts Options) *Proxy {
	t.Helper()
	p, err := New(echoServer(t), opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// roundTrip sends one line and reads it back within d.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func TestPassResetRestore(t *testing.T) {
	p := newProxy(t, Options{})
	c, r := dial(t, p)
	got, err := roundTrip(c, r, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping\n", got)

	p.Cut(Reset)
	// The established connection is reset.
	_, err = roundTrip(c, r, 5*time.Second)
	require.Error(t, err)
	require.False(t, isTimeout(err), "a reset is immediate, not a timeout: %v", err)
	// A new one is accepted and reset at once.
	require.NoError(t, refusedFast(p))

	p.Restore()
	c3, r3 := dial(t, p)
	got, err = roundTrip(c3, r3, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping\n", got)
}

func TestBlackholeIsSilentUntilRestore(t *testing.T) {
	p := newProxy(t, Options{})
	c, r := dial(t, p)
	_, err := roundTrip(c, r, 5*time.Second)
	require.NoError(t, err)

	p.Cut(Blackhole)
	_, err = roundTrip(c, r, 300*time.Millisecond)
	require.True(t, isTimeout(err), "an established connection goes silent: %v", err)
	c2, r2 := dial(t, p) // accepted, never forwarded
	_, err = roundTrip(c2, r2, 300*time.Millisecond)
	require.True(t, isTimeout(err), "a new connection goes silent: %v", err)
	require.Equal(t, 2, p.Conns())

	p.Restore()
	// Held connections are closed by the restore; new ones pass.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = r.ReadString('\n')
	require.Error(t, err)
	require.False(t, isTimeout(err), "%v", err)
	c3, r3 := dial(t, p)
	got, err := roundTrip(c3, r3, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping\n", got)
}

func TestMaxConnsBound(t *testing.T) {
	p := newProxy(t, Options{MaxConns: 2})
	for i := 0; i < 2; i++ {
		c, r := dial(t, p)
		_, err := roundTrip(c, r, 5*time.Second)
		require.NoError(t, err)
	}
	require.NoError(t, refusedFast(p), "a third connection is refused")
}

// refusedFast dials p and returns nil when the connection fails at once
// (reset at dial or at the first round trip), not by timing out.
func refusedFast(p *Proxy) error {
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		if isTimeout(err) {
			return err
		}
		return nil
	}
	defer c.Close()
	_, err = roundTrip(c, bufio.NewReader(c), 5*time.Second)
	if err == nil {
		return errors.New("the connection passed")
	}
	if isTimeout(err) {
		return err
	}
	return nil
}

func TestCloseEndsEverything(t *testing.T) {
	p, err := New(echoServer(t), Options{})
	require.NoError(t, err)
	c, r := dial(t, p)
	_, err = roundTrip(c, r, 5*time.Second)
	require.NoError(t, err)
	p.Cut(Blackhole)
	c2, _ := dial(t, p)
	_ = c2
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a blackholed connection")
	}
	_, err = net.DialTimeout("tcp", p.Addr(), time.Second)
	require.Error(t, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}
