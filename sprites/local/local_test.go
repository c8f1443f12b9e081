package local

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
)

// Environment of the "owner" helper process started by TestOwnerKilled.
const (
	ownerDirEnv  = "LOCAL_TEST_OWNER_DIR"
	ownerNameEnv = "LOCAL_TEST_OWNER_NAME"
)

func TestMain(m *testing.M) {
	runner.MaybeRunShim()
	if os.Getenv(ownerDirEnv) != "" {
		ownerMain()
		return
	}
	os.Exit(m.Run())
}

// ownerMain is the helper owner process: it creates a sandbox, starts a
// command, prints the exec id and waits to be killed.
func ownerMain() {
	ctx := context.Background()
	name := os.Getenv(ownerNameEnv)
	b, err := New(Config{Dir: os.Getenv(ownerDirEnv)})
	if err == nil {
		_, err = b.Create(ctx, name)
	}
	var e sprites.Exec
	if err == nil {
		e, err = b.Exec(ctx, name, sprites.ExecRequest{Argv: []string{"sh", "-c", "for i in $(seq 1 50); do echo $i; sleep 0.05; done"}})
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(e.ID())
	select {}
}

const testTimeout = 30 * time.Second

type testBundle struct {
	b    *Backend
	dir  string
	name string
}

func randomName(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

func newBackend(t *testing.T, dir, network string) *Backend {
	t.Helper()
	b, err := New(Config{
		Dir:     dir,
		Network: network,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	require.NoError(t, b.Check(t.Context()))
	return b
}

// setup returns a backend on a temporary dir with one sandbox, deleted at
// the end of the test.
func setup(t *testing.T, network string) *testBundle {
	t.Helper()
	dir := t.TempDir()
	tb := &testBundle{b: newBackend(t, dir, network), dir: dir, name: randomName(t)}
	createSandbox(t, tb.b, tb.name)
	return tb
}

func createSandbox(t *testing.T, b *Backend, name string) {
	t.Helper()
	info, err := b.Create(t.Context(), name)
	require.NoError(t, err)
	require.Equal(t, name, info.Name)
	t.Cleanup(func() {
		if err := b.Delete(context.Background(), name); err != nil {
			require.ErrorIs(t, err, sprites.ErrNotFound)
		}
	})
}

type result struct {
	stdout, stderr string
	code           int
}

// drain reads e to io.EOF and closes it.
func drain(t *testing.T, e sprites.Exec) result {
	t.Helper()
	defer e.Close()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var out, errb strings.Builder
	res := result{code: -1}
	for {
		ev, err := e.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch {
		case ev.Exited:
			res.code = ev.ExitCode
		case ev.Stream == sprites.Stdout:
			out.Write(ev.Data)
		default:
			errb.Write(ev.Data)
		}
	}
	res.stdout, res.stderr = out.String(), errb.String()
	return res
}

func run(t *testing.T, tb *testBundle, req sprites.ExecRequest) result {
	t.Helper()
	e, err := tb.b.Exec(t.Context(), tb.name, req)
	require.NoError(t, err)
	return drain(t, e)
}

func sh(script string) sprites.ExecRequest {
	return sprites.ExecRequest{Argv: []string{"sh", "-c", script}}
}

func TestBackend(t *testing.T) {
	t.Parallel()

	t.Run("Lifecycle", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		ctx := t.Context()
		info, err := tb.b.Get(ctx, tb.name)
		require.NoError(t, err)
		require.Equal(t, &sprites.Info{ID: tb.name, Name: tb.name, Status: "running"}, info)

		_, err = tb.b.Create(ctx, tb.name)
		var serr *sprites.Error
		require.ErrorAs(t, err, &serr)
		require.Equal(t, 409, serr.Status)

		require.NoError(t, tb.b.Delete(ctx, tb.name))
		for _, err := range []error{
			func() error { _, err := tb.b.Get(ctx, tb.name); return err }(),
			tb.b.Delete(ctx, tb.name),
			tb.b.WriteFile(ctx, tb.name, "/home/sprite/x", nil, 0o644),
			tb.b.Chmod(ctx, tb.name, "/home/sprite/x", 0o644),
			tb.b.SetNetworkPolicy(ctx, tb.name, sprites.NetworkPolicy{}),
			func() error { _, err := tb.b.Exec(ctx, tb.name, sh("true")); return err }(),
			func() error { _, err := tb.b.Attach(ctx, tb.name, "x", sprites.Offsets{}); return err }(),
			tb.b.Kill(ctx, tb.name, "x", "TERM"),
		} {
			require.ErrorIs(t, err, sprites.ErrNotFound)
		}
	})

	t.Run("MissingExec", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		_, err := tb.b.Attach(t.Context(), tb.name, "nope", sprites.Offsets{})
		require.ErrorIs(t, err, sprites.ErrNotFound)
		require.ErrorIs(t, tb.b.Kill(t.Context(), tb.name, "nope", "KILL"), sprites.ErrNotFound)
	})

	t.Run("FilesAndModes", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		ctx := t.Context()
		require.NoError(t, tb.b.WriteFile(ctx, tb.name, "/workspace/d/run.sh", []byte("#!/bin/sh\necho ran\n"), 0o600))
		require.Equal(t, "600\n", run(t, tb, sh("stat -c %a /workspace/d/run.sh")).stdout)
		require.NoError(t, tb.b.Chmod(ctx, tb.name, "/workspace/d/run.sh", 0o755))
		require.Equal(t, result{stdout: "755\n#!/bin/sh\necho ran\nran\n"},
			run(t, tb, sh("stat -c %a /workspace/d/run.sh && cat /workspace/d/run.sh && /workspace/d/run.sh")))
	})

	t.Run("Stdin", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		require.Equal(t, result{stdout: "a\nb\nEOF\n"}, run(t, tb, sprites.ExecRequest{Argv: []string{"sh", "-c", "cat; echo EOF"}, Stdin: []byte("a\nb\n")}))
		require.Equal(t, result{stdout: "EOF\n"}, run(t, tb, sh("cat; echo EOF")))
	})

	t.Run("StreamsSeparateAndOrdered", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		res := run(t, tb, sh(`for i in $(seq 1 1000); do echo out$i; echo err$i >&2; done`))
		var wantOut, wantErr strings.Builder
		for i := 1; i <= 1000; i++ {
			fmt.Fprintf(&wantOut, "out%d\n", i)
			fmt.Fprintf(&wantErr, "err%d\n", i)
		}
		require.Equal(t, result{stdout: wantOut.String(), stderr: wantErr.String()}, res)
	})

	t.Run("ExitCodes", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		for _, tt := range []struct {
			script string
			code   int
		}{{"exit 0", 0}, {"exit 42", 42}, {"kill -TERM $$", 143}} {
			require.Equal(t, tt.code, run(t, tb, sh(tt.script)).code, tt.script)
		}
	})

	t.Run("LargeOutputSlowReader", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		e, err := tb.b.Exec(t.Context(), tb.name, sh(`head -c 20971520 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob`))
		require.NoError(t, err)
		defer e.Close()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		h := sha256.New()
		var stderr strings.Builder
		code := -1
		for i := 0; ; i++ {
			ev, err := e.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			if i == 10 {
				// A slow reader: the watcher must wait, not drop.
				time.Sleep(50 * time.Millisecond)
			}
			switch {
			case ev.Exited:
				code = ev.ExitCode
			case ev.Stream == sprites.Stdout:
				h.Write(ev.Data)
			default:
				stderr.WriteString(string(ev.Data))
			}
		}
		require.Equal(t, 0, code)
		require.Equal(t, sprites.Offsets{Stdout: 20 << 20, Stderr: int64(stderr.Len())}, e.Offsets())
		require.Equal(t, hex.EncodeToString(h.Sum(nil)), strings.Fields(stderr.String())[0])
	})

	t.Run("ConcurrentExecs", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		results := make([]result, 6)
		var wg sync.WaitGroup
		for i := range results {
			e, err := tb.b.Exec(t.Context(), tb.name, sh(fmt.Sprintf(`for j in $(seq 1 300); do echo %d-$j; done`, i)))
			require.NoError(t, err)
			wg.Go(func() { results[i] = drain(t, e) })
		}
		wg.Wait()
		for i, res := range results {
			var want strings.Builder
			for j := 1; j <= 300; j++ {
				fmt.Fprintf(&want, "%d-%d\n", i, j)
			}
			require.Equal(t, result{stdout: want.String()}, res)
		}
	})

	t.Run("IdentityAndIsolation", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b := newBackend(t, dir, runner.NetworkHost)
		tb := &testBundle{b: b, dir: dir, name: randomName(t)}
		other := randomName(t)
		createSandbox(t, b, tb.name)
		createSandbox(t, b, other)
		require.Equal(t, "1000 1000 sprite /home/sprite /workspace\n",
			run(t, tb, sprites.ExecRequest{Argv: []string{"sh", "-c", `echo $(id -u) $(id -g) $(id -un) $HOME $(pwd)`}, Dir: "/workspace"}).stdout)

		marker, err := os.CreateTemp("/tmp", "local-marker-")
		require.NoError(t, err)
		marker.Close()
		t.Cleanup(func() { os.Remove(marker.Name()) })
		for _, p := range []string{"/root", "/work", "/srv", dir, marker.Name()} {
			require.Equal(t, 1, run(t, tb, sprites.ExecRequest{Argv: []string{"test", "-e", p}}).code, "%s is visible", p)
		}

		bin := "/usr/local/bin/" + tb.name
		require.Equal(t, 0, run(t, tb, sh("echo x > "+bin)).code)
		require.NoFileExists(t, bin)
		e, err := b.Exec(t.Context(), other, sprites.ExecRequest{Argv: []string{"test", "-e", bin}})
		require.NoError(t, err)
		require.Equal(t, 1, drain(t, e).code)
	})

	t.Run("Kill", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		for _, tt := range []struct {
			signal string
			code   int
		}{{"TERM", 143}, {"SIGKILL", 137}, {"int", 130}, {"9", 137}} {
			e, err := tb.b.Exec(t.Context(), tb.name, sh("echo started; exec sleep 60"))
			require.NoError(t, err)
			ev, err := e.Next(t.Context())
			require.NoError(t, err)
			require.Equal(t, "started\n", string(ev.Data))
			require.NoError(t, tb.b.Kill(t.Context(), tb.name, e.ID(), tt.signal))
			require.Equal(t, tt.code, drain(t, e).code, tt.signal)
			require.NoError(t, tb.b.Kill(t.Context(), tb.name, e.ID(), "TERM"), "killing an exited exec")
		}
		require.ErrorContains(t, tb.b.Kill(t.Context(), tb.name, "x", "NOPE"), "unknown signal")
	})

	t.Run("AttachFromOffsets", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		e, err := tb.b.Exec(t.Context(), tb.name, sh("echo 0123456789; echo abcdef >&2"))
		require.NoError(t, err)
		require.Equal(t, result{stdout: "0123456789\n", stderr: "abcdef\n"}, drain(t, e))

		for _, tt := range []struct {
			from sprites.Offsets
			want result
		}{
			{sprites.Offsets{}, result{stdout: "0123456789\n", stderr: "abcdef\n"}},
			{sprites.Offsets{Stdout: 3, Stderr: 2}, result{stdout: "3456789\n", stderr: "cdef\n"}},
			{sprites.Offsets{Stdout: 11}, result{stderr: "abcdef\n"}},
			{sprites.Offsets{Stdout: 11, Stderr: 7}, result{}},
		} {
			a, err := tb.b.Attach(t.Context(), tb.name, e.ID(), tt.from)
			require.NoError(t, err)
			require.Equal(t, e.ID(), a.ID())
			got := drain(t, a)
			require.Equal(t, 0, got.code)
			got.code = 0
			require.Equal(t, tt.want, got, "from %+v", tt.from)
			require.Equal(t, sprites.Offsets{Stdout: 11, Stderr: 7}, a.Offsets())
		}
	})

	t.Run("ReattachMidStreamExactlyOnce", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		e, err := tb.b.Exec(t.Context(), tb.name, sh(`for i in $(seq 1 40); do echo $i; echo e$i >&2; sleep 0.01; done`))
		require.NoError(t, err)
		var out, errb strings.Builder
		for out.Len() < 20 {
			ev, err := e.Next(t.Context())
			require.NoError(t, err)
			if ev.Stream == sprites.Stdout {
				out.Write(ev.Data)
			} else {
				errb.Write(ev.Data)
			}
		}
		from := e.Offsets()
		require.Equal(t, sprites.Offsets{Stdout: int64(out.Len()), Stderr: int64(errb.Len())}, from)
		require.NoError(t, e.Close())
		_, err = e.Next(t.Context())
		require.Error(t, err)

		a, err := tb.b.Attach(t.Context(), tb.name, e.ID(), from)
		require.NoError(t, err)
		rest := drain(t, a)
		var wantOut, wantErr strings.Builder
		for i := 1; i <= 40; i++ {
			fmt.Fprintf(&wantOut, "%d\n", i)
			fmt.Fprintf(&wantErr, "e%d\n", i)
		}
		require.Equal(t, wantOut.String(), out.String()+rest.stdout)
		require.Equal(t, wantErr.String(), errb.String()+rest.stderr)
		require.Equal(t, 0, rest.code)
	})

	t.Run("CloseDoesNotStopCommand", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkHost)
		e, err := tb.b.Exec(t.Context(), tb.name, sh("sleep 0.2; echo late"))
		require.NoError(t, err)
		require.NoError(t, e.Close())
		require.NoError(t, e.Close())
		a, err := tb.b.Attach(t.Context(), tb.name, e.ID(), sprites.Offsets{})
		require.NoError(t, err)
		require.Equal(t, result{stdout: "late\n"}, drain(t, a))
	})

	t.Run("NetworkPolicy", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, runner.NetworkPrivate)
		ctx := t.Context()
		// Rules the backend cannot apply are refused with the reason (D3
		// used to refuse every allow-list: issue 10 enforces them).
		for p, want := range map[string]sprites.NetworkPolicy{
			`invalid network policy: rule 0: unknown include "everything" (known: "defaults")`: {Rules: []sprites.Rule{{Include: "everything"}}},
			`invalid network policy: rule 1: invalid domain "bad domain"`:                      {Rules: []sprites.Rule{{Domain: "a.com", Action: "allow"}, {Domain: "bad domain", Action: "allow"}}},
		} {
			require.EqualError(t, tb.b.SetNetworkPolicy(ctx, tb.name, want), p)
		}
		// Allow-lists are accepted and recorded.
		for _, p := range []sprites.NetworkPolicy{
			{Rules: []sprites.Rule{{Include: "defaults"}, {Domain: "*", Action: "deny"}}},
			{Rules: []sprites.Rule{{Domain: "api.github.com", Action: "allow"}, {Domain: "*", Action: "deny"}}},
		} {
			require.NoError(t, tb.b.SetNetworkPolicy(ctx, tb.name, p))
			got, err := tb.b.Runner().Policy(tb.name)
			require.NoError(t, err)
			require.Equal(t, p, got)
		}
		// ...and enforced: only lo, and the proxy refuses what is not
		// allowed (403 to a forwarded request).
		res := run(t, tb, sprites.ExecRequest{Argv: []string{"bash", "-c",
			`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; exec 3<>/dev/tcp/127.0.0.1/3128 || exit 9; printf 'GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n' >&3; head -n1 <&3`}})
		require.Equal(t, "lo\nHTTP/1.1 403 Forbidden\r\n", res.stdout, "stderr: %s", res.stderr)
		// Unrestricted: slirp4netns gives a tap device.
		require.NoError(t, tb.b.SetNetworkPolicy(ctx, tb.name, sprites.NetworkPolicy{}))
		ifaces := sh(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort`)
		require.Equal(t, "lo\ntap0\n", run(t, tb, ifaces).stdout)
		// The host's loopback services are not reachable.
		port := listenTCP(t)
		for _, host := range []string{"127.0.0.1", "10.0.2.2"} {
			res := run(t, tb, sprites.ExecRequest{Argv: []string{"timeout", "5", "bash", "-c", "echo > /dev/tcp/" + host + "/" + port}})
			require.NotEqual(t, 0, res.code, "reached the host's %s:%s", host, port)
		}
		// Deny-all: no network at all.
		deny := sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*", Action: "deny"}}}
		require.NoError(t, tb.b.SetNetworkPolicy(ctx, tb.name, deny))
		got, err := tb.b.Runner().Policy(tb.name)
		require.NoError(t, err)
		require.Equal(t, deny, got)
		require.Equal(t, "lo\n", run(t, tb, ifaces).stdout)
		require.NotEqual(t, 0, run(t, tb, sprites.ExecRequest{Argv: []string{"getent", "hosts", "deb.debian.org"}}).code)
	})
}

func TestParseSignal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want syscall.Signal
	}{
		{"", syscall.SIGTERM},
		{"TERM", syscall.SIGTERM},
		{"SIGTERM", syscall.SIGTERM},
		{"kill", syscall.SIGKILL},
		{"INT", syscall.SIGINT},
		{"HUP", syscall.SIGHUP},
		{"9", syscall.SIGKILL},
	} {
		got, err := ParseSignal(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
	for _, in := range []string{"NOPE", "0", "-1", "SIG"} {
		_, err := ParseSignal(in)
		require.Error(t, err, in)
	}
}

// listenTCP starts a TCP server on the host's loopback that accepts and
// closes connections, and returns its port.
func listenTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func TestOwnerKilled(t *testing.T) {
	t.Parallel()
	// The owner's shim is re-parented to this process once the owner dies,
	// so that the test can reap it and leave no zombie behind.
	require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
	dir := t.TempDir()
	name := randomName(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ownerDirEnv+"="+dir, ownerNameEnv+"="+name)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = t.Output()
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	b := newBackend(t, dir, runner.NetworkPrivate)
	t.Cleanup(func() {
		if err := b.Delete(context.Background(), name); err != nil {
			require.ErrorIs(t, err, sprites.ErrNotFound)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	id := strings.TrimSpace(line)
	require.NotContains(t, id, "error")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	var rec struct {
		Shim int `json:"shim"`
	}
	pidJSON, err := os.ReadFile(filepath.Join(dir, name, "execs", id, "pid"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(pidJSON, &rec))
	t.Cleanup(func() {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(rec.Shim, &ws, 0, nil); !errors.Is(err, unix.EINTR) {
				return
			}
		}
	})

	a, err := b.Attach(t.Context(), name, id, sprites.Offsets{})
	require.NoError(t, err)
	var want strings.Builder
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	require.Equal(t, result{stdout: want.String()}, drain(t, a))
}
