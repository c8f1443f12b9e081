package runner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/sprites"
)

// Environment of the "owner" helper process started by TestOwnerKilled.
const (
	ownerDirEnv  = "RUNNER_TEST_OWNER_DIR"
	ownerNameEnv = "RUNNER_TEST_OWNER_NAME"
)

func TestMain(m *testing.M) {
	MaybeRunShim()
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
	r, err := New(Config{Dir: os.Getenv(ownerDirEnv)})
	if err == nil {
		err = r.Create(ctx, os.Getenv(ownerNameEnv))
	}
	var p *Proc
	if err == nil {
		p, err = r.Start(ctx, os.Getenv(ownerNameEnv), Spec{Argv: []string{"sh", "-c", "for i in $(seq 1 50); do echo $i; sleep 0.05; done"}})
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(p.ID())
	select {}
}

const testTimeout = 30 * time.Second

type testBundle struct {
	dir  string
	name string
	r    *Runner
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func randomName(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

// setup creates a runner on a temporary dir with one sandbox, deleted at
// the end of the test.
func setup(t *testing.T, network string) *testBundle {
	t.Helper()
	dir := t.TempDir()
	r, err := New(Config{Dir: dir, Network: network, Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, r.Check())
	b := &testBundle{dir: dir, name: randomName(t), r: r}
	createSandbox(t, r, b.name)
	return b
}

func createSandbox(t *testing.T, r *Runner, name string) {
	t.Helper()
	require.NoError(t, r.Create(t.Context(), name))
	t.Cleanup(func() {
		if r.Exists(name) {
			require.NoError(t, r.Delete(context.Background(), name))
		}
	})
}

type result struct {
	stdout, stderr string
	code           int
}

// collect watches p to its exit.
func collect(t *testing.T, p *Proc, from sprites.Offsets) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	res := result{code: -1}
	err := p.Watch(ctx, from, func(ev sprites.Event) error {
		switch {
		case ev.Exited:
			res.code = ev.ExitCode
		case ev.Stream == sprites.Stdout:
			out.Write(ev.Data)
		case ev.Stream == sprites.Stderr:
			errb.Write(ev.Data)
		}
		return nil
	})
	require.NoError(t, err)
	res.stdout, res.stderr = out.String(), errb.String()
	return res
}

func run(t *testing.T, r *Runner, name string, spec Spec) result {
	t.Helper()
	p, err := r.Start(t.Context(), name, spec)
	require.NoError(t, err)
	return collect(t, p, sprites.Offsets{})
}

func sh(script string) Spec { return Spec{Argv: []string{"sh", "-c", script}} }

func TestRunner(t *testing.T) {
	t.Parallel()

	t.Run("CreateDelete", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		require.True(t, b.r.Exists(b.name))
		require.ErrorIs(t, b.r.Create(t.Context(), b.name), ErrExists)
		require.NoError(t, b.r.Delete(t.Context(), b.name))
		require.False(t, b.r.Exists(b.name))
		require.NoDirExists(t, filepath.Join(b.dir, b.name))
		require.ErrorIs(t, b.r.Delete(t.Context(), b.name), ErrNotFound)
		_, err := b.r.Start(t.Context(), b.name, sh("true"))
		require.ErrorIs(t, err, ErrNotFound)
		_, err = b.r.Open(b.name, "nope")
		require.ErrorIs(t, err, ErrNotFound)
	})

	t.Run("WriteFileReadBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		require.NoError(t, b.r.WriteFile(b.name, "/workspace/a/b/c.txt", []byte("hello\n"), 0o640))
		res := run(t, b.r, b.name, Spec{Argv: []string{"cat", "/workspace/a/b/c.txt"}})
		require.Equal(t, result{stdout: "hello\n"}, res)
		res = run(t, b.r, b.name, sh("stat -c '%a %u' /workspace/a/b/c.txt"))
		require.Equal(t, "640 1000\n", res.stdout)

		// Written inside, read outside.
		run(t, b.r, b.name, sh("echo inside > /home/sprite/x"))
		got, err := b.r.ReadFile(b.name, "/home/sprite/x")
		require.NoError(t, err)
		require.Equal(t, "inside\n", string(got))
		fi, err := b.r.Stat(b.name, "/home/sprite/x")
		require.NoError(t, err)
		require.EqualValues(t, 7, fi.Size())

		_, err = b.r.ReadFile(b.name, "/root/x")
		require.Error(t, err)
		require.Error(t, b.r.WriteFile(b.name, "/home/sprite/../../root/x", nil, 0o644))
	})

	t.Run("Chmod", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		require.NoError(t, b.r.WriteFile(b.name, "/home/sprite/run.sh", []byte("#!/bin/sh\necho ran\n"), 0o644))
		require.NoError(t, b.r.Chmod(b.name, "/home/sprite/run.sh", 0o755))
		res := run(t, b.r, b.name, sh("stat -c %a /home/sprite/run.sh && /home/sprite/run.sh"))
		require.Equal(t, "755\nran\n", res.stdout)
	})

	t.Run("Stdin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		res := run(t, b.r, b.name, Spec{Argv: []string{"sh", "-c", "cat; echo done"}, Stdin: []byte("line1\nline2\n")})
		require.Equal(t, result{stdout: "line1\nline2\ndone\n"}, res)
		// nil stdin: EOF at once.
		res = run(t, b.r, b.name, Spec{Argv: []string{"sh", "-c", "cat; echo done"}})
		require.Equal(t, result{stdout: "done\n"}, res)
	})

	t.Run("StreamsSeparateAndOrdered", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		res := run(t, b.r, b.name, sh(`for i in $(seq 1 1000); do echo out$i; echo err$i >&2; done`))
		var wantOut, wantErr strings.Builder
		for i := 1; i <= 1000; i++ {
			fmt.Fprintf(&wantOut, "out%d\n", i)
			fmt.Fprintf(&wantErr, "err%d\n", i)
		}
		require.Equal(t, wantOut.String(), res.stdout)
		require.Equal(t, wantErr.String(), res.stderr)
		require.Equal(t, 0, res.code)
	})

	t.Run("ExitCodes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		for _, tt := range []struct {
			script string
			code   int
		}{
			{"exit 0", 0},
			{"exit 3", 3},
			{"kill -TERM $$", 143},
			{"kill -KILL $$", 137},
		} {
			p, err := b.r.Start(t.Context(), b.name, sh(tt.script))
			require.NoError(t, err)
			require.Equal(t, tt.code, collect(t, p, sprites.Offsets{}).code, tt.script)
			code, exited := p.Exit()
			require.True(t, exited)
			require.Equal(t, tt.code, code)
		}
		// bwrap reports a command it cannot run through stderr and the exit
		// code.
		res := run(t, b.r, b.name, Spec{Argv: []string{"/no/such/command"}})
		require.NotEqual(t, 0, res.code)
		require.Contains(t, res.stderr, "/no/such/command")
	})

	t.Run("LargeOutput", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		// 20 MiB of deterministic bytes, checksummed inside and outside.
		p, err := b.r.Start(t.Context(), b.name, sh(`head -c 20971520 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob`))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		h := sha256.New()
		var n int64
		var stderr bytes.Buffer
		code := -1
		require.NoError(t, p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
			switch {
			case ev.Exited:
				code = ev.ExitCode
			case ev.Stream == sprites.Stdout:
				require.LessOrEqual(t, len(ev.Data), 64<<10)
				h.Write(ev.Data)
				n += int64(len(ev.Data))
			default:
				stderr.Write(ev.Data)
			}
			return nil
		}))
		require.Equal(t, 0, code)
		require.EqualValues(t, 20<<20, n)
		require.Equal(t, hex.EncodeToString(h.Sum(nil)), strings.Fields(stderr.String())[0])
	})

	t.Run("ConcurrentExecs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		var wg sync.WaitGroup
		results := make([]result, 8)
		procs := make([]*Proc, 8)
		for i := range procs {
			p, err := b.r.Start(t.Context(), b.name, sh(fmt.Sprintf(`for j in $(seq 1 200); do echo %d-$j; done`, i)))
			require.NoError(t, err)
			procs[i] = p
		}
		for i, p := range procs {
			wg.Go(func() { results[i] = collect(t, p, sprites.Offsets{}) })
		}
		wg.Wait()
		for i, res := range results {
			var want strings.Builder
			for j := 1; j <= 200; j++ {
				fmt.Fprintf(&want, "%d-%d\n", i, j)
			}
			require.Equal(t, result{stdout: want.String()}, res)
		}
	})

	t.Run("Identity", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		res := run(t, b.r, b.name, sh(`id -u; id -g; id -un; echo $HOME; pwd; echo $PATH`))
		require.Equal(t, "1000\n1000\nsprite\n/home/sprite\n/home/sprite\n/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin\n", res.stdout)
		res = run(t, b.r, b.name, Spec{Argv: []string{"pwd"}, Dir: "/workspace"})
		require.Equal(t, "/workspace\n", res.stdout)
		res = run(t, b.r, b.name, sh(`touch /home/sprite/f /tmp/f /workspace/f && echo ok`))
		require.Equal(t, result{stdout: "ok\n"}, res)
	})

	t.Run("HostHidden", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		marker, err := os.CreateTemp("/tmp", "runner-marker-")
		require.NoError(t, err)
		marker.Close()
		t.Cleanup(func() { os.Remove(marker.Name()) })
		for _, p := range []string{"/root", "/srv", "/work", b.dir, marker.Name(), "/home/cloudsdk"} {
			res := run(t, b.r, b.name, Spec{Argv: []string{"test", "-e", p}})
			require.Equal(t, 1, res.code, "%s is visible", p)
		}
		res := run(t, b.r, b.name, sh(`ls /home`))
		require.Equal(t, "sprite\n", res.stdout)
		// Host files that are not world-readable are hidden.
		res = run(t, b.r, b.name, sh(`find /etc ! -perm -o=r ! -type l; cat /etc/shadow`))
		require.Equal(t, 0, res.code, res.stderr)
		require.Equal(t, "root:*:20000:0:99999:7:::\nsprite:*:20000:0:99999:7:::\n", res.stdout)
	})

	t.Run("OverlayWritesStayInside", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		r, err := New(Config{Dir: dir, Network: NetworkHost, Logger: testLogger(t)})
		require.NoError(t, err)
		a, other := randomName(t), randomName(t)
		createSandbox(t, r, a)
		createSandbox(t, r, other)
		bin := "/usr/local/bin/" + a
		res := run(t, r, a, sh(fmt.Sprintf(`printf '#!/bin/sh\necho hi\n' > %[1]s && chmod +x %[1]s && %[2]s`, bin, a)))
		require.Equal(t, result{stdout: "hi\n"}, res)
		require.NoFileExists(t, bin)
		res = run(t, r, other, Spec{Argv: []string{"test", "-e", bin}})
		require.Equal(t, 1, res.code)
		require.FileExists(t, filepath.Join(dir, a, "overlay", "usr", "upper", "local", "bin", a))
	})

	t.Run("Kill", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		for _, tt := range []struct {
			sig  syscall.Signal
			code int
		}{{syscall.SIGTERM, 143}, {syscall.SIGKILL, 137}, {syscall.SIGINT, 130}} {
			p, err := b.r.Start(t.Context(), b.name, sh("echo started; exec sleep 60"))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			code := -1
			require.NoError(t, p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
				if ev.Stream == sprites.Stdout && string(ev.Data) == "started\n" {
					require.NoError(t, p.Kill(tt.sig))
				}
				if ev.Exited {
					code = ev.ExitCode
				}
				return nil
			}))
			cancel()
			require.Equal(t, tt.code, code)
			require.NoError(t, p.Kill(syscall.SIGTERM), "killing an exited exec")
		}
	})

	t.Run("KillRightAfterStart", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		for range 5 {
			p, err := b.r.Start(t.Context(), b.name, Spec{Argv: []string{"sleep", "300"}})
			require.NoError(t, err)
			require.NoError(t, p.Kill(syscall.SIGTERM))
			require.Equal(t, 143, collect(t, p, sprites.Offsets{}).code)
			rec, err := p.readPid()
			require.NoError(t, err)
			require.Eventually(t, func() bool { return !groupAlive(t, rec.Pgid) },
				testTimeout, 5*time.Millisecond, "processes of the exec are left")
		}
	})

	t.Run("KillIsGraceful", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		p, err := b.r.Start(t.Context(), b.name, Spec{Argv: []string{"bash", "-c",
			`trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.01; done`}})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		var out strings.Builder
		code := -1
		require.NoError(t, p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
			if ev.Stream == sprites.Stdout {
				out.Write(ev.Data)
			}
			if out.String() == "ready\n" && ev.Stream == sprites.Stdout {
				require.NoError(t, p.Kill(syscall.SIGTERM))
			}
			if ev.Exited {
				code = ev.ExitCode
			}
			return nil
		}))
		require.Equal(t, "ready\nbye\n", out.String())
		require.Equal(t, 3, code)
	})

	t.Run("DeleteKillsExecs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		p, err := b.r.Start(t.Context(), b.name, sh("sleep 60"))
		require.NoError(t, err)
		rec, err := p.readPid()
		require.NoError(t, err)
		require.NoError(t, b.r.Delete(t.Context(), b.name))
		require.Eventually(t, func() bool { return !groupAlive(t, rec.Pgid) },
			testTimeout, 5*time.Millisecond, "processes of the exec are left")
	})

	t.Run("WatchFromOffsetsAndCancel", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		p, err := b.r.Start(t.Context(), b.name, sh("echo 0123456789; echo abcdef >&2; exec sleep 60"))
		require.NoError(t, err)
		// Wait for both lines, then cancel while the command still runs.
		ctx, cancel := context.WithCancel(t.Context())
		var got result
		err = p.Watch(ctx, sprites.Offsets{Stdout: 4, Stderr: 2}, func(ev sprites.Event) error {
			if ev.Stream == sprites.Stdout {
				got.stdout += string(ev.Data)
			} else {
				got.stderr += string(ev.Data)
			}
			if got.stdout == "456789\n" && got.stderr == "cdef\n" {
				cancel()
			}
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		_, exited := p.Exit()
		require.False(t, exited)
		require.NoError(t, p.Kill(syscall.SIGKILL))
		require.Equal(t, 137, collect(t, p, sprites.Offsets{Stdout: 11, Stderr: 7}).code)
	})
}

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		network string
		missing []string
		want    string
	}{
		{"AllPresent", NetworkPrivate, nil, ""},
		{"NoBwrap", NetworkHost, []string{"bwrap"}, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"},
		{"NoSlirpHostNetwork", NetworkHost, []string{"slirp4netns"}, ""},
		{"NoSlirpPrivateNetwork", NetworkPrivate, []string{"slirp4netns"}, "slirp4netns is not installed (needed for the private sandbox network): apt-get install slirp4netns, or set AOD_LOCAL_NETWORK=host"},
		{"NoneOfThem", NetworkPrivate, []string{"bwrap", "slirp4netns"}, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap; slirp4netns is not installed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := New(Config{Dir: t.TempDir(), Network: tt.network})
			require.NoError(t, err)
			r.lookPathFunc = func(name string) (string, error) {
				if slices.Contains(tt.missing, name) {
					return "", exec.ErrNotFound
				}
				return exec.LookPath(name)
			}
			err = r.Check()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := New(Config{Dir: t.TempDir(), Network: "bridge"})
	require.ErrorContains(t, err, `unknown network mode "bridge"`)
}

func TestNetwork(t *testing.T) {
	t.Parallel()

	t.Run("DenyAll", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkPrivate)
		policy := sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*", Action: "deny"}}}
		require.NoError(t, b.r.SetPolicy(b.name, policy))
		got, err := b.r.Policy(b.name)
		require.NoError(t, err)
		require.Equal(t, policy, got)
		res := run(t, b.r, b.name, sh(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '`))
		require.Equal(t, "lo\n", res.stdout)
		res = run(t, b.r, b.name, Spec{Argv: []string{"getent", "hosts", "deb.debian.org"}})
		require.NotEqual(t, 0, res.code)
		ip := hostIPv4(t)
		port := listenTCP(t, ip+":0")
		res = run(t, b.r, b.name, Spec{Argv: []string{"timeout", "5", "bash", "-c", "echo > /dev/tcp/" + ip + "/" + port}})
		require.NotEqual(t, 0, res.code, "deny-all sandbox reached %s:%s", ip, port)
	})

	t.Run("PrivateNoHostLoopback", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkPrivate)
		port := listenTCP(t, "127.0.0.1:0")
		res := run(t, b.r, b.name, sh(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort`))
		require.Equal(t, result{stdout: "lo\ntap0\n"}, res)
		// The sandbox's own loopback works.
		res = run(t, b.r, b.name, Spec{Argv: []string{"python3", "-c",
			`import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); socket.create_connection(s.getsockname()); print("ok")`}})
		require.Equal(t, result{stdout: "ok\n"}, res)
		for _, host := range []string{"127.0.0.1", "10.0.2.2"} {
			res := run(t, b.r, b.name, Spec{Argv: []string{"timeout", "5", "bash", "-c", "echo > /dev/tcp/" + host + "/" + port}})
			require.NotEqual(t, 0, res.code, "connected to the host's %s:%s", host, port)
		}
	})

	t.Run("PrivateOutbound", func(t *testing.T) {
		t.Parallel()
		// The way out is slirp's default route. (The host's own address,
		// which this test used to connect to, is filtered since issue 10:
		// see TestEgressUnrestricted. No test sends traffic off the
		// machine, so "reaches the internet" is this route plus a filter
		// whose rules name only blocked ranges, see TestEgressRules.)
		b := setup(t, NetworkPrivate)
		res := run(t, b.r, b.name, sh(`awk '$2 == "00000000" { print $1, $3 }' /proc/net/route`))
		require.Equal(t, result{stdout: "tap0 0202000A\n"}, res, "no default route via 10.0.2.2 on tap0")
	})

	t.Run("HostSharesNetwork", func(t *testing.T) {
		t.Parallel()
		b := setup(t, NetworkHost)
		port := listenTCP(t, "127.0.0.1:0")
		res := run(t, b.r, b.name, Spec{Argv: []string{"timeout", "5", "bash", "-c", "echo > /dev/tcp/127.0.0.1/" + port}})
		require.Equal(t, 0, res.code)
	})
}

// listenTCP starts a TCP server that accepts and closes connections and
// returns its port.
func listenTCP(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
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

// hostIPv4 returns a non-loopback IPv4 address of this host.
func hostIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address")
	return ""
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
	r, err := New(Config{Dir: dir, Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() {
		if r.Exists(name) {
			require.NoError(t, r.Delete(context.Background(), name))
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	id := strings.TrimSpace(line)
	require.NotContains(t, id, "error")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	p, err := r.Open(name, id)
	require.NoError(t, err)
	rec, err := p.readPid()
	require.NoError(t, err)
	t.Cleanup(func() { reap(rec.Shim) })
	res := collect(t, p, sprites.Offsets{})
	var want strings.Builder
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	require.Equal(t, result{stdout: want.String()}, res)
}

// reap waits for pid, a child of this process, to end.
func reap(pid int) {
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

func TestWatchEndsWhenSandboxDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)
	p, err := b.r.Start(t.Context(), b.name, sh("echo started; exec sleep 60"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var deleteErr error
	err = p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
		if string(ev.Data) == "started\n" {
			deleteErr = b.r.Delete(ctx, b.name)
		}
		return nil
	})
	require.NoError(t, deleteErr)
	// Either the kill's exit code arrived before the directory went away,
	// or the watch reports the exec gone.
	if err != nil {
		require.ErrorIs(t, err, ErrNotFound)
	}
}

func TestShimKilled(t *testing.T) {
	t.Parallel()
	for _, network := range []string{NetworkHost, NetworkPrivate} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			b := setup(t, network)
			p, err := b.r.Start(t.Context(), b.name, sh("echo started; exec sleep 60"))
			require.NoError(t, err)
			rec, err := p.readPid()
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			code := -1
			require.NoError(t, p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
				if string(ev.Data) == "started\n" {
					require.NoError(t, syscall.Kill(rec.Shim, syscall.SIGKILL))
				}
				if ev.Exited {
					code = ev.ExitCode
				}
				return nil
			}))
			// The exec counts as killed, and the command dies with its shim.
			require.Equal(t, 137, code)
			require.Eventually(t, func() bool { return !groupAlive(t, rec.Pgid) },
				testTimeout, 5*time.Millisecond, "bwrap outlived its shim")
		})
	}
}

// groupAlive reports whether a process of the group is alive (zombies,
// which a lazy init may leave around for a while, do not count).
func groupAlive(t *testing.T, pgid int) bool {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	require.NoError(t, err)
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 2 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func TestCheckHostProblems(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		sysctls map[string]string
		want    string
	}{
		{"Fine", map[string]string{"user/max_user_namespaces": "96363", "kernel/unprivileged_userns_clone": "1"}, ""},
		{"NoSysctls", nil, ""},
		{"NoUserNamespaces", map[string]string{"user/max_user_namespaces": "0\n"}, "user.max_user_namespaces=0"},
		{"DebianUnprivilegedOff", map[string]string{"kernel/unprivileged_userns_clone": "0\n"}, "kernel.unprivileged_userns_clone=0"},
		{"UbuntuAppArmor", map[string]string{"kernel/apparmor_restrict_unprivileged_userns": "1\n"}, "AppArmor restricts unprivileged user namespaces"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := userNamespaceProblem(func(p string) ([]byte, error) {
				v, ok := tt.sysctls[strings.TrimPrefix(p, "/proc/sys/")]
				if !ok {
					return nil, os.ErrNotExist
				}
				return []byte(v), nil
			})
			if tt.want == "" {
				require.Empty(t, got)
				return
			}
			require.Contains(t, got, tt.want)
		})
	}
	require.Contains(t, bwrapProblem([]byte("usage: bwrap [OPTIONS...]\n    --unshare-user\n")), "bubblewrap is too old")
	help, err := exec.Command("bwrap", "--help").Output()
	require.NoError(t, err)
	require.Empty(t, bwrapProblem(help), "the installed bubblewrap")
}
