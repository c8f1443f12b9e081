package spritestest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
)

// Environment of a fake server run as a child process of the test binary.
const (
	envChild = "AOD_SPRITESTEST_CHILD"
	envAddr  = "AOD_SPRITESTEST_ADDR"
	envDir   = "AOD_SPRITESTEST_DIR"
	envToken = "AOD_SPRITESTEST_TOKEN"
)

func TestMain(m *testing.M) {
	runner.MaybeRunShim()
	if os.Getenv(envChild) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild serves a fake server until SIGTERM and prints "READY <url>" once
// it listens.
func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Start(Options{Addr: os.Getenv(envAddr), Dir: os.Getenv(envDir), Token: os.Getenv(envToken), Logger: logger})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("READY " + s.URL())
	<-ctx.Done()
	_ = s.Close()
	return 0
}

// childHarness runs the fake server in a child process on a fixed loopback
// port and data dir; Restart kills it with SIGKILL and starts a new one.
type childHarness struct {
	dir, addr, token string
	client           *sprites.Client

	mu  sync.Mutex
	cmd *exec.Cmd
}

func newChildHarness(t *testing.T) *childHarness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	h := &childHarness{dir: t.TempDir(), addr: addr, token: "child-" + randHex(8)}

	h.client = sprites.NewClient("http://"+addr, h.token, sprites.WithReattach(10, 100*time.Millisecond))
	h.start(t)
	t.Cleanup(func() {
		h.mu.Lock()
		cmd := h.cmd
		h.mu.Unlock()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		// Remove what is left (mounts, running commands) with an in-process
		// owner of the same directory.
		s, err := Start(Options{Dir: h.dir, Token: h.token, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Errorf("clean up: %v", err)
			return
		}
		s.DeleteAll(context.Background())
		_ = s.Close()
	})
	return h
}

func (h *childHarness) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envAddr+"="+h.addr, envDir+"="+h.dir, envToken+"="+h.token)
	logf, err := os.OpenFile(filepath.Join(h.dir, "child.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer logf.Close()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log, _ := os.ReadFile(filepath.Join(h.dir, "child.log"))
		t.Fatalf("fake server child did not start (%q, %v): %s", line, err, log)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	h.mu.Lock()
	h.cmd = cmd
	h.mu.Unlock()
}

func (h *childHarness) Backend() sprites.Backend { return h.client }

func (h *childHarness) DataDir() string { return h.dir }

func (h *childHarness) Restart(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	cmd := h.cmd
	h.mu.Unlock()
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	_ = cmd.Wait()
	h.start(t)
}

func TestConformanceClientAgainstFake(t *testing.T) {
	t.Parallel()
	Conformance(t, newChildHarness(t))
}
