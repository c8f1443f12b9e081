package runner

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/internal/leakcheck"
	"github.com/aodhq/aod/sprites"
)

// The escape suite: each attempt runs inside a real sandbox, as an attacker
// would (an environment's setup_script or the agent itself), and must be
// denied. Failure messages carry the evidence.

// outsideUID returns the host uid that uid 1000 inside the sandbox maps to:
// the uid_map of a sandbox process read from the host (inside, the map is
// shown relative to the parent namespace, which bwrap --disable-userns
// nests).
func outsideUID(t *testing.T, b *testBundle) int {
	t.Helper()
	p, err := b.r.Start(t.Context(), b.name, sh(sleepStarted))
	require.NoError(t, err)
	defer func() { _ = p.Kill(syscall.SIGKILL) }()
	waitStdout(t, p, "started\n")
	rec, err := p.readPid()
	require.NoError(t, err)
	for _, pid := range descendants(t, rec.Shim) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) != "sleep\n" {
			continue
		}
		m, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
		require.NoError(t, err)
		fields := strings.Fields(string(m))
		require.Len(t, fields, 3, "uid_map of the sandbox's sleep: %q", m)
		require.Equal(t, "1000", fields[0], "uid_map: %q", m)
		uid, err := strconv.Atoi(fields[1])
		require.NoError(t, err)
		return uid
	}
	t.Fatal("no sleep in the sandbox")
	return 0
}

func hostOwner(t *testing.T, p string) (uid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return int(fi.Sys().(*syscall.Stat_t).Uid), fi.Mode()
}

func TestEscapeIdentity(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)

	uid := outsideUID(t, b)
	require.NotEqual(t, 0, uid, "uid 1000 inside the sandbox is host root (uid_map 1000 %d 1)", uid)

	res := run(t, b.r, b.name, sh(`id -u; id -g; id -un; echo $HOME`))
	require.Equal(t, result{stdout: "1000\n1000\nsprite\n/home/sprite\n"}, res)

	// Files made inside are owned by the unprivileged uid on the host, and a
	// setuid copy of a shell is not setuid-root anywhere on the host disk.
	res = run(t, b.r, b.name, sh(`set -e
echo x > /home/sprite/made
cp /bin/sh /home/sprite/suid && chmod u+s /home/sprite/suid
cp /bin/sh /usr/local/bin/suid && chmod u+s /usr/local/bin/suid
echo y > /opt/made`))
	require.Equal(t, 0, res.code, "stderr: %s", res.stderr)
	for _, p := range []string{
		filepath.Join(b.dir, b.name, "home", "made"),
		filepath.Join(b.dir, b.name, "home", "suid"),
		filepath.Join(b.dir, b.name, "overlay", "usr", "upper", "local", "bin", "suid"),
		filepath.Join(b.dir, b.name, "overlay", "opt", "upper", "made"),
	} {
		owner, mode := hostOwner(t, p)
		require.Equal(t, uid, owner, "%s made inside is owned by host uid %d (mode %s)", p, owner, mode)
		require.False(t, owner == 0 && mode&os.ModeSetuid != 0, "%s is setuid root on the host (%s)", p, mode)
	}
}

func TestEscapeKernelSettings(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)
	for _, tt := range []struct{ name, script string }{
		// Each writes back the current value, so a hole changes nothing.
		{"proc-sys-vm", `v=$(cat /proc/sys/vm/stat_interval) && echo "$v" > /proc/sys/vm/stat_interval && echo WROTE`},
		{"proc-sys-core-pattern", `v=$(cat /proc/sys/kernel/core_pattern) && printf '%s\n' "$v" > /proc/sys/kernel/core_pattern && echo WROTE`},
		{"sysrq-trigger", `echo h > /proc/sysrq-trigger && echo WROTE`},
		{"sys", `for f in /sys/kernel/uevent_helper /sys/kernel/mm/transparent_hugepage/enabled; do [ -e $f ] && v=$(cat $f) && echo "$v" > $f && echo WROTE $f; done; mkdir /sys/aod-x && echo WROTE mkdir; true`},
	} {
		res := run(t, b.r, b.name, sh(tt.script))
		require.NotContains(t, res.stdout, "WROTE", "%s: the sandbox wrote a host kernel setting: stdout %q stderr %q", tt.name, res.stdout, res.stderr)
	}
}

func TestEscapeRootOnlyFiles(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)
	// Placed after the sandbox was created: files added to the host later.
	for _, f := range []struct {
		dir  string
		mode os.FileMode
	}{{"/opt", 0o600}, {"/etc", 0o400}} {
		if !hostDirIsDir(f.dir[1:]) {
			continue
		}
		p := filepath.Join(f.dir, "aod-escape-"+b.name)
		require.NoError(t, os.WriteFile(p, []byte("host secret\n"), f.mode))
		t.Cleanup(func() { os.Remove(p) })
		require.NoError(t, os.Chmod(p, f.mode))
		res := run(t, b.r, b.name, Spec{Argv: []string{"cat", p}})
		require.NotEqual(t, 0, res.code, "read the host's root-only %s (%s): %q", p, f.mode, res.stdout)
		require.NotContains(t, res.stdout, "host secret")
	}
}

func TestEscapeNamespacesAndSyscalls(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)

	res := run(t, b.r, b.name, sh(`grep -E '^(NoNewPrivs|Seccomp|CapEff|CapPrm):' /proc/self/status`))
	require.Contains(t, res.stdout, "NoNewPrivs:\t1", "status: %s", res.stdout)
	require.Contains(t, res.stdout, "Seccomp:\t2", "no seccomp filter: %s", res.stdout)
	require.Contains(t, res.stdout, "CapEff:\t0000000000000000", "status: %s", res.stdout)

	for _, tt := range []struct{ name, script string }{
		{"nested-userns", `unshare -U true && echo ESCAPED`},
		{"nested-userns-root", `unshare -Ur id -u && echo ESCAPED`},
		{"mount", `mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo ESCAPED`},
		{"mount-in-nested-ns", `mkdir -p /tmp/m && unshare -Urm mount -t tmpfs none /tmp/m && echo ESCAPED`},
	} {
		res := run(t, b.r, b.name, sh(tt.script))
		require.NotContains(t, res.stdout, "ESCAPED", "%s succeeded: stdout %q stderr %q", tt.name, res.stdout, res.stderr)
	}

	if runtime.GOARCH != "amd64" {
		t.Skip("syscall numbers below are amd64's")
	}
	// perl (in every Debian) calls raw syscalls; each must fail with EPERM.
	for _, tt := range []struct {
		name string
		call string
	}{
		// ptrace(PTRACE_ATTACH) of its own forked child.
		{"ptrace", `my $c = fork(); if ($c == 0) { sleep 5; exit 0 } my $r = syscall(101, 16, $c, 0, 0); my $e = $! + 0; kill 9, $c; print "$r $e\n"`},
		{"keyctl", `my $r = syscall(250, 0, 0, 0, 0, 0); print "$r ", $! + 0, "\n"`},
		{"bpf", `my $r = syscall(321, 0, 0, 0); print "$r ", $! + 0, "\n"`},
		{"perf_event_open", `my $r = syscall(298, 0, 0, -1, -1, 0); print "$r ", $! + 0, "\n"`},
		{"userfaultfd", `my $r = syscall(323, 0); print "$r ", $! + 0, "\n"`},
		{"unshare-newuser", `my $r = syscall(272, 0x10000000); print "$r ", $! + 0, "\n"`},
	} {
		res := run(t, b.r, b.name, Spec{Argv: []string{"perl", "-e", tt.call}})
		require.Equal(t, "-1 1\n", res.stdout, "%s: want -1 EPERM (1); got %q (stderr %q)", tt.name, res.stdout, res.stderr)
	}
}

func TestEscapeHostProcesses(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)
	sleeper := exec.Command("sleep", "60")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	pid := strconv.Itoa(sleeper.Process.Pid)

	res := run(t, b.r, b.name, sh(`kill -9 `+pid+` && echo KILLED; ls /proc | grep -qx `+pid+` && echo VISIBLE; true`))
	require.NotContains(t, res.stdout, "KILLED", "stderr: %s", res.stderr)
	require.NotContains(t, res.stdout, "VISIBLE")
	if runtime.GOARCH == "amd64" {
		res = run(t, b.r, b.name, Spec{Argv: []string{"perl", "-e", `my $r = syscall(101, 16, ` + pid + `, 0, 0); print "$r\n"`}})
		require.Equal(t, "-1\n", res.stdout, "ptrace attach of host pid %s: %s", pid, res.stderr)
	}
	require.NoError(t, sleeper.Process.Signal(syscall.Signal(0)), "the host's sleep %s died", pid)
}

// TestEscapeSecretsNotInEnvironment cannot run in parallel: it sets aod's
// secrets in this process's environment, as a real aod has them.
func TestEscapeSecretsNotInEnvironment(t *testing.T) {
	secrets := map[string]string{
		"DATABASE_URL":              "postgres://u:dbsecret-" + randomName(t) + "@db/aod",
		"SPRITES_API_KEY":           "spritesecret-" + randomName(t),
		"FIELD_ENCRYPTION_KEY":      "fieldsecret-" + randomName(t),
		"FIELD_ENCRYPTION_KEYS_OLD": "oldsecret-" + randomName(t),
		"DJANGO_SECRET_KEY":         "djangosecret-" + randomName(t),
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	b := setup(t, NetworkPrivate)
	p, err := b.r.Start(t.Context(), b.name, sh(sleepStarted))
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Kill(syscall.SIGKILL) })
	waitStdout(t, p, "started\n")
	rec, err := p.readPid()
	require.NoError(t, err)

	// The shim, its children (bwrap, slirp4netns) and everything below.
	procs := descendants(t, rec.Shim)
	procs = append(procs, rec.Shim)
	var sawSlirp, sawSleep bool
	for _, pid := range procs {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue // gone
		}
		name := strings.TrimSpace(string(comm))
		if name == "slirp4netns" {
			// --enable-sandbox drops every capability but
			// CAP_NET_BIND_SERVICE; --enable-seccomp filters its calls.
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			require.NoError(t, err)
			require.Contains(t, string(status), "Seccomp:\t2", "slirp4netns runs without seccomp:\n%s", status)
			require.Contains(t, string(status), "CapEff:\t0000000000000400", "slirp4netns keeps capabilities:\n%s", status)
			sawSlirp = true
		}
		sawSleep = sawSleep || name == "sleep"
		for k, v := range secrets {
			require.NotContains(t, string(env), v, "%s of pid %d (%s) is in its environment: %q", k, pid, name, strings.ReplaceAll(string(env), "\x00", " "))
		}
	}
	require.True(t, sawSlirp, "no slirp4netns among %v", procs)
	require.True(t, sawSleep, "no sandbox process among %v", procs)
}

// waitStdout watches p until its stdout starts with want.
func waitStdout(t *testing.T, p *Proc, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var got string
	err := p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
		got += string(ev.Data)
		if strings.HasPrefix(got, want) {
			return errFound
		}
		if ev.Exited {
			return fmt.Errorf("exited %d with %q", ev.ExitCode, got)
		}
		return nil
	})
	require.ErrorIs(t, err, errFound)
}

// descendants lists every process below pid.
func descendants(t *testing.T, pid int) []int {
	t.Helper()
	children := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
				pp, _ := strconv.Atoi(strings.TrimSpace(v))
				children[pp] = append(children[pp], p)
			}
		}
		f.Close()
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		c := children[queue[0]]
		queue = queue[1:]
		out = append(out, c...)
		queue = append(queue, c...)
	}
	return out
}

// plantedPaths are the paths aod writes during provisioning (runtimes'
// EnvFilePath, GitCredentialsPath, ProvisionScriptPath, the runtimes'
// config files and an inline skill).
var plantedPaths = []string{
	"/tmp/aod-env",
	"/tmp/.git-credentials",
	"/tmp/aod-provision.sh",
	"/home/sprite/.claude.json",
	"/home/sprite/.codex/config.toml",
	"/home/sprite/.codex/auth.json",
	"/home/sprite/.gemini/settings.json",
	"/home/sprite/.config/opencode/opencode.json",
	"/home/sprite/.claude/skills/s/SKILL.md",
}

// threads returns this process's OS thread count.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no Threads: in /proc/self/status")
	return 0
}

// TestEscapePlantedFiles plants a FIFO, a symlink to /etc/shadow, a symlink
// to another file of the sandbox, a device node and a symlinked parent
// directory at every path aod writes; each of WriteFile, ReadFile, Stat and
// Chmod must fail at once with a clear error and leave nothing behind.
// Not parallel: it counts goroutines and threads.
func TestEscapePlantedFiles(t *testing.T) {
	b := setup(t, NetworkHost)
	home := filepath.Join(b.dir, b.name, "home")
	shadowBefore, err := os.ReadFile("/etc/shadow")
	require.NoError(t, err)
	goroutines, osThreads := runtime.NumGoroutine(), threads(t)

	for _, kind := range []string{"fifo", "symlink-shadow", "symlink-inside", "device", "symlink-dir"} {
		for _, p := range plantedPaths {
			t.Run(kind+p, func(t *testing.T) {
				dir := filepath.Dir(p)
				var script string
				switch kind {
				case "fifo":
					script = fmt.Sprintf("mkdir -p %s && mkfifo %s", dir, p)
				case "symlink-shadow":
					script = fmt.Sprintf("mkdir -p %s && ln -s /etc/shadow %s", dir, p)
				case "symlink-inside":
					// Relative: os.Root follows it, it stays inside the root.
					script = fmt.Sprintf("mkdir -p %[1]s && echo keep > %[1]s/aod-victim && ln -s aod-victim %[2]s", dir, p)
				case "symlink-dir":
					if dir == "/tmp" || dir == "/home/sprite" {
						t.Skip("no parent directory of its own")
					}
					script = fmt.Sprintf("mkdir -p /home/sprite/elsewhere $(dirname %[1]s) && rm -rf %[1]s && ln -s /home/sprite/elsewhere %[1]s", dir)
				case "device":
					// mknod needs CAP_MKNOD, which the sandbox lacks: plant
					// it from the host side.
					script = fmt.Sprintf("mkdir -p %s", dir)
				}
				res := run(t, b.r, b.name, sh("rm -rf "+p+"; "+script))
				require.Equal(t, 0, res.code, "plant: %s", res.stderr)
				if kind == "device" {
					hp := hostPath(b, p)
					require.NoError(t, unix.Mknod(hp, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
				}

				for _, op := range []struct {
					name string
					fn   func() error
				}{
					{"WriteFile", func() error { return b.r.WriteFile(b.name, p, []byte("secret"), 0o600) }},
					{"ReadFile", func() error { _, err := b.r.ReadFile(b.name, p); return err }},
					{"Stat", func() error { _, err := b.r.Stat(b.name, p); return err }},
					{"Chmod", func() error { return b.r.Chmod(b.name, p, 0o600) }},
				} {
					done := make(chan error, 1)
					go func() { done <- op.fn() }()
					select {
					case err := <-done:
						require.Error(t, err, "%s of a planted %s at %s succeeded", op.name, kind, p)
						require.Contains(t, err.Error(), p)
						if kind != "symlink-dir" {
							require.Contains(t, err.Error(), "not a regular file", "%s %s", op.name, kind)
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("%s of a planted %s at %s blocked for 5s", op.name, kind, p)
					}
				}
				victim, err := os.ReadFile(hostPath(b, filepath.Join(dir, "aod-victim")))
				if err == nil {
					require.Equal(t, "keep\n", string(victim), "aod wrote through a symlink")
				}
				entries, _ := os.ReadDir(filepath.Join(home, "elsewhere"))
				require.Empty(t, entries, "aod wrote through a symlinked directory")
			})
		}
	}
	shadowAfter, err := os.ReadFile("/etc/shadow")
	require.NoError(t, err)
	require.Equal(t, shadowBefore, shadowAfter, "/etc/shadow changed")
	requireNoLeak(t, goroutines, osThreads)
}

// requireNoLeak waits (up to 5s) for the goroutine count to fall back to
// goroutines and for no OS thread of this process to be stuck in open(2)
// (a blocked open of a FIFO holds a goroutine and a thread each; the Go
// runtime keeps idle threads, so the thread count alone proves nothing).
func requireNoLeak(t *testing.T, goroutines, osThreads int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, th, inOpen := runtime.NumGoroutine(), threads(t), threadsInOpen(t)
		if g <= goroutines && inOpen == 0 {
			t.Logf("goroutines %d → %d, threads %d → %d, none in open(2)", goroutines, g, osThreads, th)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaked: goroutines %d → %d, threads %d → %d, %d threads blocked in open(2)", goroutines, g, osThreads, th, inOpen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// threadsInOpen counts this process's threads blocked in open/openat.
func threadsInOpen(t *testing.T) int {
	t.Helper()
	n, err := leakcheck.ThreadsInOpen()
	require.NoError(t, err)
	return n
}

// hostPath maps a path inside the sandbox to the host directory backing it.
func hostPath(b *testBundle, p string) string {
	d := filepath.Join(b.dir, b.name)
	if rest, ok := strings.CutPrefix(p, "/home/sprite/"); ok {
		return filepath.Join(d, "home", rest)
	}
	if rest, ok := strings.CutPrefix(p, "/tmp/"); ok {
		return filepath.Join(d, "tmp", rest)
	}
	panic("no host path for " + p)
}

// TestSandboxWithoutUID: a sandbox made by an aod that ran sandboxes as
// root (no uid file, home owned by root) gets a uid at its next exec, and
// its home; the directories it controlled are not walked.
func TestSandboxWithoutUID(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkHost)
	d := filepath.Join(b.dir, b.name)
	b.r.releaseUID(b.name, d)
	require.NoError(t, os.Remove(filepath.Join(d, uidFile)))
	require.NoError(t, os.Lchown(filepath.Join(d, "home"), 0, 0))
	require.NoError(t, os.Lchown(filepath.Join(d, "root", "opt"), 0, 0))

	res := run(t, b.r, b.name, sh(`id -u && touch /home/sprite/ok && stat -c %u /home/sprite`))
	require.Equal(t, result{stdout: "1000\n1000\n"}, res, "stderr: %s", res.stderr)
	uid, err := b.r.sandboxUID(b.name, d)
	require.NoError(t, err)
	owner, _ := hostOwner(t, filepath.Join(d, "home", "ok"))
	require.Equal(t, uid, owner)
	owner, _ = hostOwner(t, filepath.Join(d, "root", "opt"))
	require.Equal(t, 0, owner, "walked /opt of a sandbox that ran code")
}

// sleepStarted runs a background sleep and says "started" only once the
// child has exec'd sleep (before that its comm is still the shell's), so
// a test that looks for it among the host's processes cannot miss it.
const sleepStarted = `sleep 30 & until [ "$(cat /proc/$!/comm 2>/dev/null)" = sleep ]; do :; done; echo started; wait`
