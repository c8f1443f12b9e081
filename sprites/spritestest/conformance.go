package spritestest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
)

// Harness gives Conformance the backend under test.
//
// The sandboxes' runner belongs to an owner process: for the Sprites client
// it is the (fake) server, for the local backend the aod process. Restart
// must kill that owner with SIGKILL (or, when the owner is the test process
// itself, drop every object of the old owner without any cleanup, as a
// SIGKILL would) and bring up a new owner over the same data directory.
// Commands started before keep running; after Restart, Backend returns a
// backend that talks to the new owner.
type Harness interface {
	// Backend returns the backend under test (the same or a new value on
	// each call).
	Backend() sprites.Backend
	// Restart kills the owner of the runner and starts a new one on the same
	// state, returning once it serves.
	Restart(t *testing.T)
	// DataDir is the host directory holding the sandboxes; it must not be
	// visible inside them.
	DataDir() string
}

// LargeOutputBytes is the output size of the large-output case: 20 MiB, or
// 200 MiB when AOD_BENCH_SCALE=full (D22).
func LargeOutputBytes() int {
	if os.Getenv("AOD_BENCH_SCALE") == "full" {
		return 200 << 20
	}
	return 20 << 20
}

// Conformance runs the backend conformance suite. The restart case runs
// first, alone; the others run in parallel, each in its own sandbox.
func Conformance(t *testing.T, h Harness) {
	ctx := context.Background()
	run := &conf{h: h}

	t.Run("ExecSurvivesOwnerRestart", func(t *testing.T) { run.restart(ctx, t) })

	cases := []struct {
		name string
		fn   func(ctx context.Context, t *testing.T)
	}{
		{"AllowListNetwork", run.allowListNetwork},
		{"Chmod", run.chmod},
		{"ConcurrentExecs", run.concurrentExecs},
		{"DenyAllNetwork", run.denyAllNetwork},
		{"ExecStdin", run.execStdin},
		{"ExitCodes", run.exitCodes},
		{"FilesOutsideInvisible", run.filesOutsideInvisible},
		{"Kill", run.kill},
		{"LargeOutput", run.largeOutput},
		{"Lifecycle", run.lifecycle},
		{"PrivateNetworkNoHostLoopback", run.privateNetworkNoHostLoopback},
		{"ReattachFromOffsets", run.reattachFromOffsets},
		{"StdoutStderrOrdering", run.stdoutStderrOrdering},
		{"WriteFileReadBack", run.writeFileReadBack},
		{"WritesToUsrStayInside", run.writesToUsrStayInside},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(ctx, t)
		})
	}
}

type conf struct {
	h Harness
}

var sandboxSeq struct {
	sync.Mutex
	n int
}

// sandbox creates a sandbox for the test and deletes it at the end.
func (c *conf) sandbox(ctx context.Context, t *testing.T) string {
	t.Helper()
	sandboxSeq.Lock()
	sandboxSeq.n++
	n := sandboxSeq.n
	sandboxSeq.Unlock()
	base := strings.ToLower(t.Name()[strings.LastIndex(t.Name(), "/")+1:])
	name := fmt.Sprintf("conf-%s-%d-%s", base[:min(len(base), 24)], n, randHex(3))
	info, err := c.h.Backend().Create(ctx, name)
	require.NoError(t, err)
	require.Equal(t, name, info.Name)
	t.Cleanup(func() {
		err := c.h.Backend().Delete(context.WithoutCancel(ctx), name)
		if err != nil && !errors.Is(err, sprites.ErrNotFound) {
			t.Errorf("delete sandbox %s: %v", name, err)
		}
	})
	return name
}

// result is a finished exec.
type result struct {
	stdout, stderr []byte
	code           int
}

// exec runs argv to completion.
func (c *conf) exec(ctx context.Context, t *testing.T, name string, req sprites.ExecRequest) result {
	t.Helper()
	ex, err := c.h.Backend().Exec(ctx, name, req)
	require.NoError(t, err)
	defer ex.Close()
	return collect(ctx, t, ex, result{})
}

// collect reads ex to its exit, appending to r.
func collect(ctx context.Context, t *testing.T, ex sprites.Exec, r result) result {
	t.Helper()
	for {
		ev, err := ex.Next(ctx)
		if errors.Is(err, io.EOF) {
			return r
		}
		require.NoError(t, err)
		switch {
		case ev.Exited:
			r.code = ev.ExitCode
		case ev.Stream == sprites.Stdout:
			r.stdout = append(r.stdout, ev.Data...)
		case ev.Stream == sprites.Stderr:
			r.stderr = append(r.stderr, ev.Data...)
		}
	}
}

func bash(script string) sprites.ExecRequest {
	return sprites.ExecRequest{Argv: []string{"bash", "-c", script}}
}

func (c *conf) lifecycle(ctx context.Context, t *testing.T) {
	b := c.h.Backend()
	name := c.sandbox(ctx, t)
	info, err := b.Get(ctx, name)
	require.NoError(t, err)
	require.Equal(t, name, info.Name)

	_, err = b.Create(ctx, name)
	var apiErr *sprites.Error
	require.ErrorAs(t, err, &apiErr, "creating an existing sandbox")
	require.Contains(t, []int{400, 409}, apiErr.Status)

	res := c.exec(ctx, t, name, bash("pwd; id -u; echo $HOME"))
	require.Equal(t, 0, res.code, "stderr: %s", res.stderr)
	require.Equal(t, "/home/sprite\n1000\n/home/sprite\n", string(res.stdout))

	require.NoError(t, b.Delete(ctx, name))
	_, err = b.Get(ctx, name)
	require.ErrorIs(t, err, sprites.ErrNotFound)
	require.ErrorIs(t, b.Delete(ctx, name), sprites.ErrNotFound)
	_, err = b.Get(ctx, "conf-never-created-"+randHex(3))
	require.ErrorIs(t, err, sprites.ErrNotFound)
}

func (c *conf) writeFileReadBack(ctx context.Context, t *testing.T) {
	b := c.h.Backend()
	name := c.sandbox(ctx, t)
	data := []byte("line one\nbinary \x00\x01\xff tail\n")
	tests := []struct {
		path string
		mode fs.FileMode
	}{
		{"/home/sprite/a/b/c/file.txt", 0o644},
		{"/home/sprite/.codex/auth.json", 0o600},
		{"/workspace/script.sh", 0o755},
		{"/tmp/x", 0o640},
	}
	for _, tt := range tests {
		require.NoError(t, b.WriteFile(ctx, name, tt.path, data, tt.mode))
		res := c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"cat", tt.path}})
		require.Equal(t, 0, res.code, "stderr: %s", res.stderr)
		require.Equal(t, data, res.stdout)
		res = c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"stat", "-c", "%a", tt.path}})
		require.Equal(t, fmt.Sprintf("%o\n", tt.mode), string(res.stdout), tt.path)
	}
	// Overwrite with shorter content.
	require.NoError(t, b.WriteFile(ctx, name, tests[0].path, []byte("short"), 0o644))
	res := c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"cat", tests[0].path}})
	require.Equal(t, "short", string(res.stdout))
	// Files written by the backend are the sandbox user's.
	res = c.exec(ctx, t, name, bash("echo appended >> "+tests[0].path+" && cat "+tests[0].path))
	require.Equal(t, 0, res.code, "stderr: %s", res.stderr)
	require.Equal(t, "shortappended\n", string(res.stdout))
}

func (c *conf) chmod(ctx context.Context, t *testing.T) {
	b := c.h.Backend()
	name := c.sandbox(ctx, t)
	const p = "/home/sprite/.codex/auth.json"
	require.NoError(t, b.WriteFile(ctx, name, p, []byte("{}"), 0o644))
	for _, mode := range []fs.FileMode{0o600, 0o755, 0o400} {
		require.NoError(t, b.Chmod(ctx, name, p, mode))
		res := c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"stat", "-c", "%a", p}})
		require.Equal(t, fmt.Sprintf("%o\n", mode), string(res.stdout))
	}
	err := b.Chmod(ctx, name, "/home/sprite/missing", 0o600)
	require.Error(t, err)
}

func (c *conf) execStdin(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	in := bytes.Repeat([]byte("stdin data 0123456789\n"), 50000) // ~1 MiB
	sum := sha256.Sum256(in)
	res := c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"sha256sum"}, Stdin: in})
	require.Equal(t, 0, res.code)
	require.Equal(t, hex.EncodeToString(sum[:])+"  -\n", string(res.stdout))

	res = c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"wc", "-c"}, Stdin: []byte{}})
	require.Equal(t, "0\n", string(res.stdout))
	// nil stdin: EOF at once, so cat ends.
	res = c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"cat"}})
	require.Equal(t, 0, res.code)
	require.Empty(t, res.stdout)
	// Working directory.
	res = c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"pwd"}, Dir: "/workspace"})
	require.Equal(t, "/workspace\n", string(res.stdout))
}

func (c *conf) stdoutStderrOrdering(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	const n = 500
	res := c.exec(ctx, t, name, bash(fmt.Sprintf(`for i in $(seq 1 %d); do echo out$i; echo err$i >&2; done`, n)))
	require.Equal(t, 0, res.code)
	var wantOut, wantErr strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&wantOut, "out%d\n", i)
		fmt.Fprintf(&wantErr, "err%d\n", i)
	}
	require.Equal(t, wantOut.String(), string(res.stdout))
	require.Equal(t, wantErr.String(), string(res.stderr))

	// Output written in a strict hand-off between the streams (each write
	// waits until the test has seen the previous one) arrives in order.
	b := c.h.Backend()
	ex, err := b.Exec(ctx, name, bash(`echo first; while [ ! -e /tmp/a ]; do sleep 0.01; done; echo second >&2; while [ ! -e /tmp/b ]; do sleep 0.01; done; echo third`))
	require.NoError(t, err)
	defer ex.Close()
	for i, want := range []struct {
		stream sprites.Stream
		data   string
		then   string
	}{{sprites.Stdout, "first\n", "/tmp/a"}, {sprites.Stderr, "second\n", "/tmp/b"}, {sprites.Stdout, "third\n", ""}} {
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, want.stream, ev.Stream, "event %d", i)
		require.Equal(t, want.data, string(ev.Data))
		if want.then != "" {
			require.NoError(t, b.WriteFile(ctx, name, want.then, nil, 0o644))
		}
	}
	ev, err := ex.Next(ctx)
	require.NoError(t, err)
	require.True(t, ev.Exited)
}

func (c *conf) exitCodes(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	tests := []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 1", 1},
		{"exit 42", 42},
		{"exit 255", 255},
		{"kill -TERM $$", 143},
		{"kill -KILL $$", 137},
		{"kill -INT $$", 130},
	}
	for _, tt := range tests {
		res := c.exec(ctx, t, name, bash(tt.script))
		require.Equal(t, tt.want, res.code, tt.script)
	}
	res := c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"/no/such/binary"}})
	require.NotZero(t, res.code)
}

func (c *conf) largeOutput(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	size := LargeOutputBytes()
	ex, err := c.h.Backend().Exec(ctx, name, bash(fmt.Sprintf(
		`head -c %d /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big`, size)))
	require.NoError(t, err)
	defer ex.Close()
	h := sha256.New()
	var n int
	var stderr []byte
	code := -1
	for {
		ev, err := ex.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch {
		case ev.Exited:
			code = ev.ExitCode
		case ev.Stream == sprites.Stdout:
			h.Write(ev.Data)
			n += len(ev.Data)
		default:
			stderr = append(stderr, ev.Data...)
		}
	}
	require.Equal(t, 0, code, "stderr: %s", stderr)
	require.Equal(t, size, n)
	want, _, _ := strings.Cut(string(stderr), " ")
	require.Equal(t, want, hex.EncodeToString(h.Sum(nil)))
	require.Equal(t, sprites.Offsets{Stdout: int64(size), Stderr: int64(len(stderr))}, ex.Offsets())
}

func (c *conf) concurrentExecs(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	const execs, lines = 6, 2000
	var wg sync.WaitGroup
	results := make([]result, execs)
	errs := make([]error, execs)
	for i := range execs {
		wg.Go(func() {
			ex, err := c.h.Backend().Exec(ctx, name, bash(fmt.Sprintf(`for i in $(seq 1 %d); do echo %d-$i; done; echo e%d >&2`, lines, i, i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer ex.Close()
			for {
				ev, err := ex.Next(ctx)
				if errors.Is(err, io.EOF) {
					return
				}
				if err != nil {
					errs[i] = err
					return
				}
				switch {
				case ev.Exited:
					results[i].code = ev.ExitCode
				case ev.Stream == sprites.Stdout:
					results[i].stdout = append(results[i].stdout, ev.Data...)
				default:
					results[i].stderr = append(results[i].stderr, ev.Data...)
				}
			}
		})
	}
	wg.Wait()
	for i := range execs {
		require.NoError(t, errs[i])
		var want strings.Builder
		for j := 1; j <= lines; j++ {
			fmt.Fprintf(&want, "%d-%d\n", i, j)
		}
		require.Equal(t, want.String(), string(results[i].stdout))
		require.Equal(t, fmt.Sprintf("e%d\n", i), string(results[i].stderr))
		require.Equal(t, 0, results[i].code)
	}
}

// hostListener listens on addr and answers "pong" to every connection; it
// counts accepted connections.
type hostListener struct {
	ln       net.Listener
	accepted chan struct{}
}

func listenHost(t *testing.T, addr string) *hostListener {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	require.NoError(t, err)
	h := &hostListener{ln: ln, accepted: make(chan struct{}, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case h.accepted <- struct{}{}:
			default:
			}
			_, _ = conn.Write([]byte("pong\n"))
			conn.Close()
		}
	}()
	return h
}

func (h *hostListener) port() int { return h.ln.Addr().(*net.TCPAddr).Port }

// hostIP returns a non-loopback IPv4 address of this host, or "".
func hostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP.String()
		}
	}
	return ""
}

// connectScript tries a TCP connection and prints what the peer says.
func connectScript(host string, port int) string {
	return fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d || exit 9; head -n1 <&3`, host, port)
}

func (c *conf) denyAllNetwork(ctx context.Context, t *testing.T) {
	ip := hostIP()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address on this host to test against")
	}
	ln := listenHost(t, "0.0.0.0:0")
	script := "timeout 10 bash -c " + strconv.Quote(connectScript(ip, ln.port()))

	open := c.sandbox(ctx, t)
	res := c.exec(ctx, t, open, bash(script))
	if os.Getenv("AOD_LOCAL_NETWORK") == "host" {
		// Positive control: on the host's network its address is reachable.
		require.Equal(t, 0, res.code, "unrestricted sandbox on the host network should reach %s:%d; stderr: %s", ip, ln.port(), res.stderr)
		require.Equal(t, "pong\n", string(res.stdout))
	} else {
		// Unrestricted is the internet, not the host's own addresses.
		require.NotEqual(t, 0, res.code, "unrestricted sandbox reached the host's address %s:%d: %s", ip, ln.port(), res.stdout)
		require.Empty(t, ln.accepted)
	}

	denied := c.sandbox(ctx, t)
	require.NoError(t, c.h.Backend().SetNetworkPolicy(ctx, denied, sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*", Action: "deny"}}}))
	before := len(ln.accepted)
	res = c.exec(ctx, t, denied, bash(script))
	require.NotEqual(t, 0, res.code, "deny-all sandbox reached the host: %s", res.stdout)
	require.Empty(t, res.stdout)
	require.Equal(t, before, len(ln.accepted))
	// Name resolution fails too.
	res = c.exec(ctx, t, denied, bash(`timeout 10 getent hosts example.com`))
	require.NotEqual(t, 0, res.code)
}

// allowListNetwork: under an allow-list the host is not reachable directly
// and a name that is not allowed cannot be fetched (Sprites refuses its
// DNS; the local backend's proxy refuses it).
func (c *conf) allowListNetwork(ctx context.Context, t *testing.T) {
	ip := hostIP()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address on this host to test against")
	}
	ln := listenHost(t, "0.0.0.0:0")
	name := c.sandbox(ctx, t)
	require.NoError(t, c.h.Backend().SetNetworkPolicy(ctx, name, sprites.NetworkPolicy{Rules: []sprites.Rule{
		{Domain: "allowed.invalid", Action: "allow"}, {Domain: "*", Action: "deny"}}}))
	res := c.exec(ctx, t, name, bash("timeout 10 bash -c "+strconv.Quote(connectScript(ip, ln.port()))))
	require.NotEqual(t, 0, res.code, "allow-list sandbox reached the host directly: %s", res.stdout)
	res = c.exec(ctx, t, name, bash(`command -v curl >/dev/null || exit 200; curl -sSf --max-time 10 http://not-allowed.invalid/`))
	if res.code == 200 {
		t.Skip("curl is not installed in the sandbox")
	}
	require.NotEqual(t, 0, res.code, "allow-list sandbox fetched a name that is not allowed: %s", res.stdout)
	require.Empty(t, ln.accepted)
}

func (c *conf) privateNetworkNoHostLoopback(ctx context.Context, t *testing.T) {
	if os.Getenv("AOD_LOCAL_NETWORK") == "host" {
		t.Skip("AOD_LOCAL_NETWORK=host shares the host network")
	}
	ln := listenHost(t, "127.0.0.1:0")
	name := c.sandbox(ctx, t)
	for _, host := range []string{"127.0.0.1", "10.0.2.2"} {
		res := c.exec(ctx, t, name, bash("timeout 10 bash -c "+strconv.Quote(connectScript(host, ln.port()))))
		require.NotEqual(t, 0, res.code, "sandbox reached the host loopback via %s", host)
		require.Empty(t, res.stdout)
	}
	require.Empty(t, ln.accepted)
}

func (c *conf) filesOutsideInvisible(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	var paths []string
	marker := filepath.Join("/root", ".aod-conformance-"+randHex(4))
	if err := os.WriteFile(marker, []byte("secret"), 0o600); err == nil {
		t.Cleanup(func() { os.Remove(marker) })
		paths = append(paths, marker)
	}
	if d := c.h.DataDir(); d != "" {
		paths = append(paths, d)
	}
	wd, _ := os.Getwd()
	paths = append(paths, wd, "/srv/.", "/root/.")
	for _, p := range paths {
		res := c.exec(ctx, t, name, sprites.ExecRequest{Argv: []string{"ls", "-a", p}})
		entries := strings.Fields(string(res.stdout))
		// An empty placeholder directory is acceptable; contents are not.
		if res.code == 0 {
			for _, e := range entries {
				require.Contains(t, []string{".", ".."}, e, "%s is visible inside the sandbox", p)
			}
		}
	}
}

func (c *conf) writesToUsrStayInside(ctx context.Context, t *testing.T) {
	one, two := c.sandbox(ctx, t), c.sandbox(ctx, t)
	file := "/usr/local/aod-conformance-" + randHex(4)
	res := c.exec(ctx, t, one, bash("echo inside > "+file+" && cat "+file))
	require.Equal(t, 0, res.code, "writing under /usr should work in the sandbox; stderr: %s", res.stderr)
	require.Equal(t, "inside\n", string(res.stdout))
	_, err := os.Stat(file)
	require.ErrorIs(t, err, fs.ErrNotExist, "the write reached the host")
	res = c.exec(ctx, t, two, sprites.ExecRequest{Argv: []string{"test", "-e", file}})
	require.Equal(t, 1, res.code, "the write reached another sandbox")
}

func (c *conf) kill(ctx context.Context, t *testing.T) {
	b := c.h.Backend()
	name := c.sandbox(ctx, t)
	ex, err := b.Exec(ctx, name, bash(`trap 'echo got-term; exit 143' TERM; echo ready; while :; do sleep 0.05; done`))
	require.NoError(t, err)
	defer ex.Close()
	ev, err := ex.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "ready\n", string(ev.Data))
	require.NoError(t, b.Kill(ctx, name, ex.ID(), "TERM"))
	res := collect(ctx, t, ex, result{})
	require.Equal(t, 143, res.code)
	if string(res.stdout) != "got-term\n" {
		// The command should see SIGTERM (a graceful stop for agents); a
		// backend that only kills its wrapper gets the code right but not
		// this. Reported, not failed, until every backend delivers it.
		t.Logf("KNOWN ISSUE: the command's TERM trap did not run (stdout %q)", res.stdout)
	}
	require.NoError(t, b.Kill(ctx, name, ex.ID(), "TERM"), "killing an exited command")

	ex, err = b.Exec(ctx, name, sprites.ExecRequest{Argv: []string{"sleep", "300"}})
	require.NoError(t, err)
	defer ex.Close()
	require.NoError(t, b.Kill(ctx, name, ex.ID(), "KILL"))
	res = collect(ctx, t, ex, result{})
	require.Equal(t, 137, res.code)
}

// waitScript prints before, waits for /tmp/go, then prints after.
const waitScript = `echo one; echo err-one >&2; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo two; echo err-two >&2`

func (c *conf) reattachFromOffsets(ctx context.Context, t *testing.T) {
	b := c.h.Backend()
	name := c.sandbox(ctx, t)
	ex, err := b.Exec(ctx, name, bash(waitScript))
	require.NoError(t, err)
	id := ex.ID()
	require.NotEmpty(t, id)
	var got result
	for got.stdout == nil || got.stderr == nil {
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		if ev.Stream == sprites.Stdout {
			got.stdout = append(got.stdout, ev.Data...)
		} else {
			got.stderr = append(got.stderr, ev.Data...)
		}
	}
	require.Equal(t, "one\n", string(got.stdout))
	require.Equal(t, "err-one\n", string(got.stderr))
	off := ex.Offsets()
	require.Equal(t, sprites.Offsets{Stdout: 4, Stderr: 8}, off)
	require.NoError(t, ex.Close())

	re, err := b.Attach(ctx, name, id, off)
	require.NoError(t, err)
	defer re.Close()
	require.Equal(t, id, re.ID())
	require.NoError(t, b.WriteFile(ctx, name, "/tmp/go", nil, 0o644))
	rest := collect(ctx, t, re, result{})
	require.Equal(t, 0, rest.code)
	require.Equal(t, "two\n", string(rest.stdout))
	require.Equal(t, "err-two\n", string(rest.stderr))
	require.Equal(t, sprites.Offsets{Stdout: 8, Stderr: 16}, re.Offsets())

	// From zero, a finished command replays everything.
	all, err := b.Attach(ctx, name, id, sprites.Offsets{})
	require.NoError(t, err)
	defer all.Close()
	full := collect(ctx, t, all, result{})
	require.Equal(t, "one\ntwo\n", string(full.stdout))
	require.Equal(t, "err-one\nerr-two\n", string(full.stderr))

	missing, err := b.Attach(ctx, name, "nosuchexec", sprites.Offsets{})
	if err == nil {
		// Backends may report a missing exec on the first Next instead.
		_, err = missing.Next(ctx)
		missing.Close()
	}
	require.ErrorIs(t, err, sprites.ErrNotFound)
}

func (c *conf) restart(ctx context.Context, t *testing.T) {
	name := c.sandbox(ctx, t)
	const size = 1 << 20
	ex, err := c.h.Backend().Exec(ctx, name, bash(waitScript+fmt.Sprintf(`; head -c %d /dev/zero | tr '\0' a; echo after`, size)))
	require.NoError(t, err)
	id := ex.ID()
	var got result
	for len(got.stdout) < 4 || len(got.stderr) < 8 {
		ev, err := ex.Next(ctx)
		require.NoError(t, err)
		if ev.Stream == sprites.Stdout {
			got.stdout = append(got.stdout, ev.Data...)
		} else {
			got.stderr = append(got.stderr, ev.Data...)
		}
	}

	c.h.Restart(t)
	require.NoError(t, c.h.Backend().WriteFile(ctx, name, "/tmp/go", nil, 0o644))

	// The old stream re-attaches by itself (Sprites client) or reports the
	// loss, after which the caller re-attaches from its offsets.
	for {
		ev, err := ex.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			require.ErrorIs(t, err, sprites.ErrTransportLost)
			off := ex.Offsets()
			ex.Close()
			ex, err = c.h.Backend().Attach(ctx, name, id, off)
			require.NoError(t, err)
			continue
		}
		switch {
		case ev.Exited:
			got.code = ev.ExitCode
		case ev.Stream == sprites.Stdout:
			got.stdout = append(got.stdout, ev.Data...)
		default:
			got.stderr = append(got.stderr, ev.Data...)
		}
	}
	ex.Close()
	require.Equal(t, 0, got.code)
	want := "one\ntwo\n" + strings.Repeat("a", size) + "after\n"
	require.Equal(t, len(want), len(got.stdout))
	require.True(t, string(got.stdout) == want, "stdout differs from the expected output")
	require.Equal(t, "err-one\nerr-two\n", string(got.stderr))
}
