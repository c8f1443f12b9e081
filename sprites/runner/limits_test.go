package runner

import (
	"context"
	"errors"
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

	"github.com/aodhq/aod/sprites"
)

// Small limits, so the escape tests run fast.
var testLimits = Limits{Memory: 256 << 20, Pids: 64, Disk: 64 << 20, CPU: 1, NoFile: 1024}

// setupLimited creates a runner with limits and two sandboxes: the
// attacker's and a neighbour that must keep working.
func setupLimited(t *testing.T, l Limits) (r *Runner, attacker, neighbour string) {
	t.Helper()
	r, err := New(Config{Dir: t.TempDir(), Network: NetworkHost, Limits: l, Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, r.Check())
	attacker, neighbour = randomName(t), randomName(t)
	createSandbox(t, r, attacker)
	createSandbox(t, r, neighbour)
	return r, attacker, neighbour
}

// neighbourRuns runs a normal command in the neighbour sandbox (while the
// attacker's exec is at its limit) and on the host, and checks both work.
func neighbourRuns(t *testing.T, r *Runner, neighbour string) {
	t.Helper()
	res := run(t, r, neighbour, sh("echo neighbour ok; head -c 8M /dev/zero > /home/sprite/f && wc -c < /home/sprite/f"))
	require.Equal(t, result{stdout: "neighbour ok\n8388608\n"}, res, "a neighbour sandbox must be unaffected")
	out, err := exec.Command("sh", "-c", "echo host ok").CombinedOutput()
	require.NoError(t, err, "the host must still start processes: %s", out)
}

// watchStderr starts p's watcher and returns a channel closed once stderr
// contains want, and a function that waits for the exit and returns the
// result.
func watchStderr(t *testing.T, p *Proc, want string) (<-chan struct{}, func() result) {
	t.Helper()
	seen := make(chan struct{})
	done := make(chan result, 1)
	go func() {
		var out, errb strings.Builder
		res := result{code: -1}
		var once sync.Once
		err := p.Watch(context.Background(), sprites.Offsets{}, func(ev sprites.Event) error {
			switch {
			case ev.Exited:
				res.code = ev.ExitCode
			case ev.Stream == sprites.Stdout:
				out.Write(ev.Data)
			case ev.Stream == sprites.Stderr:
				errb.Write(ev.Data)
				if strings.Contains(errb.String(), want) {
					once.Do(func() { close(seen) })
				}
			}
			return nil
		})
		if err != nil {
			errb.WriteString("watch: " + err.Error())
		}
		res.stdout, res.stderr = out.String(), errb.String()
		done <- res
	}()
	return seen, func() result {
		select {
		case res := <-done:
			return res
		case <-time.After(testTimeout):
			t.Fatal("exec did not end")
			return result{}
		}
	}
}

// TestLimitPids: a fork bomb stops at the pids limit (its shell gets
// EAGAIN), the count of processes in the sandbox's cgroup never exceeds the
// limit, the neighbour and the host keep working, and once the bomb is
// killed the sandbox runs commands again.
func TestLimitPids(t *testing.T) {
	t.Parallel()
	r, attacker, neighbour := setupLimited(t, testLimits)

	// A binary fork bomb of depth 8 (up to 511 shells, each sleeping): far
	// over the limit of 64, yet bounded, so this test cannot take the
	// machine down on a runner without limits.
	bomb := `b() { if [ $1 -gt 0 ]; then b $(($1-1)) & b $(($1-1)) & fi; sleep 20; }; b 8`
	p, err := r.Start(t.Context(), attacker, Spec{Argv: []string{"bash", "-c", bomb}})
	require.NoError(t, err)
	const eagain = "Resource temporarily unavailable"
	seen, wait := watchStderr(t, p, eagain)

	// Sample the cgroup's process count until the bomb is stopped.
	pidsFile := filepath.Join(r.cg.v1["pids"], r.cgroupName(attacker), "pids.current")
	if r.cg.v2 != "" {
		pidsFile = filepath.Join(r.cg.v2, r.cgroupName(attacker), "pids.current")
	}
	stopSampling := make(chan struct{})
	maxSeen := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if b, err := os.ReadFile(pidsFile); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				peak = max(peak, n)
			}
			select {
			case <-stopSampling:
				maxSeen <- peak
				return
			case <-tick.C:
			}
		}
	}()

	select {
	case <-seen:
	case <-time.After(testTimeout):
		require.NoError(t, p.Kill(syscall.SIGKILL))
		res := wait()
		t.Fatalf("the fork bomb never hit the pids limit (no %q); stderr: %.500s", eagain, res.stderr)
	}
	neighbourRuns(t, r, neighbour)
	close(stopSampling)
	peak := <-maxSeen
	require.Positive(t, peak, "no process count read from %s", pidsFile)
	require.LessOrEqual(t, peak, testLimits.Pids, "the sandbox's cgroup held more processes than its limit")

	require.NoError(t, p.Kill(syscall.SIGKILL))
	res := wait()
	require.Equal(t, 137, res.code, "stderr: %.500s", res.stderr)
	require.Contains(t, res.stderr, "fork: retry: "+eagain, "the bomb's shell must see EAGAIN")
	require.True(t, strings.HasSuffix(res.stderr, "\naod: sandbox process limit (64) reached; new processes were refused\n"),
		"stderr must end with aod's message: %q", res.stderr[max(0, len(res.stderr)-300):])

	// The bomb is gone with its exec: the sandbox works again.
	procs, err := r.cgroupProcs(attacker)
	require.NoError(t, err)
	require.Empty(t, procs, "processes of the killed exec are left in the cgroup")
	require.Equal(t, result{stdout: "after\n"}, run(t, r, attacker, sh("echo after")))
}

// TestLimitMemory: a memory balloon is OOM-killed at the memory limit
// inside its cgroup (exit 137) and the exec's stderr ends with aod's
// message; the neighbour is unaffected.
func TestLimitMemory(t *testing.T) {
	t.Parallel()
	r, attacker, neighbour := setupLimited(t, testLimits)
	// tail keeps its whole input (no newline in it) in memory: 600 MiB.
	p, err := r.Start(t.Context(), attacker, sh("head -c 600M /dev/zero | tail >/dev/null; echo survived $?"))
	require.NoError(t, err)
	neighbourRuns(t, r, neighbour)
	res := collect(t, p, sprites.Offsets{})
	msg := "aod: sandbox memory limit (256 MiB) reached; process killed\n"
	require.Equal(t, "survived 137\n", res.stdout, "the balloon must be killed by SIGKILL (137); stderr: %.500s", res.stderr)
	require.True(t, strings.HasSuffix(res.stderr, msg), "stderr must end with %q; it is %q", msg, res.stderr)
	neighbourRuns(t, r, neighbour)

	// The command that ran out of memory decides the exit code.
	p, err = r.Start(t.Context(), attacker, sh("head -c 600M /dev/zero | tail >/dev/null"))
	require.NoError(t, err)
	res = collect(t, p, sprites.Offsets{})
	require.Equal(t, 137, res.code, "stderr: %.500s", res.stderr)
	require.True(t, strings.HasSuffix(res.stderr, msg), "stderr must end with %q; it is %q", msg, res.stderr)

	// A command within the limit says nothing about it.
	res = run(t, r, attacker, sh("head -c 100M /dev/zero | tail | wc -c"))
	require.Equal(t, result{stdout: "104857600\n"}, res)
}

// TestLimitDisk: filling the disk stops at the disk limit with ENOSPC;
// writes to system directories (the overlay) count in the same limit; the
// host's disk holds no more than the image's size; the neighbour is
// unaffected.
func TestLimitDisk(t *testing.T) {
	t.Parallel()
	r, attacker, neighbour := setupLimited(t, testLimits)
	d := filepath.Join(r.dir, attacker)

	// 24 MiB through the /usr overlay, then fill home.
	res := run(t, r, attacker, sh("dd if=/dev/zero of=/usr/local/big bs=1M count=24 2>&1 | tail -1 >&2; dd if=/dev/zero of=/home/sprite/big bs=1M count=200; echo dd $?; stat -c %s /usr/local/big /home/sprite/big"))
	require.Contains(t, res.stderr, "No space left on device", "the disk fill must end with ENOSPC; stdout %q", res.stdout)
	lines := strings.Fields(res.stdout)
	require.Len(t, lines, 4, "stdout: %q stderr: %q", res.stdout, res.stderr)
	require.Equal(t, "1", lines[1], "dd must fail")
	usr, _ := strconv.ParseInt(lines[2], 10, 64)
	home, _ := strconv.ParseInt(lines[3], 10, 64)
	require.EqualValues(t, 24<<20, usr, "the /usr/local write fits")
	require.Less(t, usr+home, testLimits.Disk, "overlay and home writes together must stay under the disk limit (usr %d + home %d)", usr, home)
	require.Greater(t, usr+home, testLimits.Disk/2, "the fill must have used most of the disk (usr %d + home %d)", usr, home)

	// The host's disk holds the image, no bigger than the limit, and the
	// overlay's upper dir is on the image, not on the host's filesystem.
	var img, host, upper syscall.Stat_t
	require.NoError(t, syscall.Stat(filepath.Join(d, diskImage), &img))
	require.LessOrEqual(t, img.Blocks*512, testLimits.Disk, "disk image allocates %d bytes on the host", img.Blocks*512)
	require.NoError(t, syscall.Stat(d, &host))
	require.NoError(t, syscall.Stat(filepath.Join(d, "overlay", "usr", "upper", "local", "big"), &upper))
	require.NotEqual(t, host.Dev, upper.Dev, "overlay upper files must be on the sandbox's disk, not the host's")
	require.NoFileExists(t, "/usr/local/big")

	neighbourRuns(t, r, neighbour)
	// Freeing space makes the sandbox usable again.
	res = run(t, r, attacker, sh("rm /home/sprite/big && echo x > /home/sprite/small && cat /home/sprite/small"))
	require.Equal(t, result{stdout: "x\n"}, res)
}

// TestLimitNoFile: sandbox processes have RLIMIT_NOFILE at the limit, soft
// and hard, and cannot raise it.
func TestLimitNoFile(t *testing.T) {
	t.Parallel()
	r, attacker, _ := setupLimited(t, testLimits)
	res := run(t, r, attacker, Spec{Argv: []string{"bash", "-c", "ulimit -Sn; ulimit -Hn; ulimit -n 4096 && echo raised"}})
	require.Equal(t, "1024\n1024\n", res.stdout, "stderr: %q", res.stderr)
	require.Contains(t, res.stderr, "Operation not permitted")
}

// TestLimitCgroup: the sandbox's processes are in its cgroup with the
// configured limits, also for an exec re-opened by another Runner (after an
// aod restart); Delete removes the cgroup, the disk image and its loop
// device.
func TestLimitCgroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r1, err := New(Config{Dir: dir, Network: NetworkHost, Limits: testLimits, Logger: testLogger(t)})
	require.NoError(t, err)
	name := randomName(t)
	require.NoError(t, r1.Create(t.Context(), name))
	// Dir holds sandboxes only (callers list it to find them).
	second := randomName(t)
	createSandbox(t, r1, second) // from the in-memory template
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{name, second}, names)
	require.NoError(t, r1.Delete(t.Context(), second))
	loopsBefore := loopDevicesUnder(t, dir)
	require.Len(t, loopsBefore, 1, "one loop device backs the sandbox's disk")

	p1, err := r1.Start(t.Context(), name, sh("sleep 30"))
	require.NoError(t, err)

	// A new Runner on the same directory: as after a restart.
	r2, err := New(Config{Dir: dir, Network: NetworkHost, Limits: testLimits, Logger: testLogger(t)})
	require.NoError(t, err)
	p2, err := r2.Open(name, p1.ID())
	require.NoError(t, err)
	rec, err := p2.readPid()
	require.NoError(t, err)
	procs, err := r2.cgroupProcs(name)
	require.NoError(t, err)
	require.Contains(t, procs, rec.Pgid, "bwrap must be in the sandbox's cgroup")
	require.Contains(t, procs, rec.Init, "the sandbox's init must be in its cgroup")
	require.NotContains(t, procs, rec.Shim, "the shim stays outside the sandbox's cgroup")
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(rec.Init) + "/cgroup")
	require.NoError(t, err)
	require.Contains(t, string(cg), r2.cgroupName(name), "the sandbox's init must be in the cgroup named after the sandbox")
	// A second exec, started by the new Runner, joins the same cgroup.
	p3, err := r2.Start(t.Context(), name, sh("sleep 30"))
	require.NoError(t, err)
	rec3, err := p3.readPid()
	require.NoError(t, err)
	procs, err = r2.cgroupProcs(name)
	require.NoError(t, err)
	require.Contains(t, procs, rec3.Init)

	// The limits are the configured ones.
	want := map[string]string{}
	if r2.cg.v2 != "" {
		want["memory.max"] = "268435456"
		want["pids.max"] = "64"
		if r2.cg.v2CPU {
			want["cpu.max"] = "100000 100000"
		}
		for f, v := range want {
			got, err := os.ReadFile(filepath.Join(r2.cg.v2, r2.cgroupName(name), f))
			require.NoError(t, err)
			require.Equal(t, v, strings.TrimSpace(string(got)), f)
		}
	} else {
		for _, f := range []struct{ ctrl, file, v string }{
			{"memory", "memory.limit_in_bytes", "268435456"},
			{"pids", "pids.max", "64"},
			{"cpu", "cpu.cfs_quota_us", "100000"},
		} {
			got, err := os.ReadFile(filepath.Join(r2.cg.v1[f.ctrl], r2.cgroupName(name), f.file))
			require.NoError(t, err)
			require.Equal(t, f.v, strings.TrimSpace(string(got)), f.file)
		}
	}

	require.NoError(t, r2.Delete(t.Context(), name))
	for _, d := range r2.cgroupDirs(name) {
		require.NoDirExists(t, d, "Delete must remove the cgroup")
	}
	require.NoDirExists(t, filepath.Join(dir, name))
	require.Empty(t, loopDevicesUnder(t, dir), "Delete must free the loop device")
	for _, pid := range []int{rec.Init, rec3.Init} {
		require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the sandbox's processes must be gone after Delete")
	}
}

// loopDevicesUnder lists the loop devices whose backing file is under dir.
func loopDevicesUnder(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	require.NoError(t, err)
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		if strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, f)
		}
	}
	return out
}

// TestLimitsFailClosed: without the cgroup controllers Check says so and
// how to opt out, and Create refuses to make a sandbox without limits;
// with limits off (explicitly) no cgroup or disk is made.
func TestLimitsFailClosed(t *testing.T) {
	t.Parallel()
	r, err := New(Config{Dir: t.TempDir(), Network: NetworkHost, Logger: testLogger(t)})
	require.NoError(t, err)
	r.cg, r.cgErr = cgroupHost{}, errors.New("no cgroup hierarchy with the memory and pids controllers is mounted")
	err = r.Check()
	require.ErrorContains(t, err, "sandbox resource limits cannot be enforced: no cgroup hierarchy")
	require.ErrorContains(t, err, "AOD_LOCAL_LIMITS=off")
	name := randomName(t)
	require.ErrorContains(t, r.Create(t.Context(), name), "sandbox resource limits cannot be enforced")
	require.False(t, r.Exists(name))
	require.NoDirExists(t, filepath.Join(r.dir, name))

	off, err := New(Config{Dir: t.TempDir(), Network: NetworkHost, Limits: Limits{Off: true}, Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, off.Check())
	createSandbox(t, off, name)
	require.NoFileExists(t, filepath.Join(off.dir, name, diskImage))
	require.Nil(t, off.sandboxLimits(name))
	require.Equal(t, result{stdout: "ok\n"}, run(t, off, name, sh("echo ok")))

	_, err = New(Config{Dir: t.TempDir(), Limits: Limits{Memory: 1 << 20}})
	require.ErrorContains(t, err, "memory limit 1048576 is below 16 MiB")
}

func TestParseFormatBytes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"2GiB", 2 << 30}, {"2G", 2 << 30}, {"512MiB", 512 << 20}, {"512m", 512 << 20},
		{"1073741824", 1 << 30}, {"64 MiB", 64 << 20}, {"1.5G", 3 << 29}, {"0", 0}, {"10KB", 10 << 10},
	} {
		got, err := ParseBytes(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
	for _, bad := range []string{"", "x", "-1G", "2P", "1e30G", "G"} {
		_, err := ParseBytes(bad)
		require.Error(t, err, bad)
	}
	require.Equal(t, "2 GiB", FormatBytes(2<<30))
	require.Equal(t, "256 MiB", FormatBytes(256<<20))
	require.Equal(t, "1.5 GiB", FormatBytes(3<<29))
	require.Equal(t, "1.5 KiB", FormatBytes(1536))
	require.Equal(t, "100 B", FormatBytes(100))
}

// TestLimitsSwitched: a sandbox made with limits off keeps its files when
// a Runner with limits on runs in it, and one made with limits on is still
// on its disk (mounted again after a reboot) and fully removed by a Runner
// with limits off.
func TestLimitsSwitched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	off, err := New(Config{Dir: dir, Network: NetworkHost, Limits: Limits{Off: true}, Logger: testLogger(t)})
	require.NoError(t, err)
	on, err := New(Config{Dir: dir, Network: NetworkHost, Limits: testLimits, Logger: testLogger(t)})
	require.NoError(t, err)

	legacy := randomName(t)
	createSandbox(t, off, legacy)
	require.NoError(t, off.WriteFile(legacy, "/home/sprite/x", []byte("kept\n"), 0o644))
	require.Equal(t, result{stdout: "kept\n"}, run(t, on, legacy, sh("cat /home/sprite/x")))

	limited := randomName(t)
	createSandbox(t, on, limited)
	require.NoError(t, on.WriteFile(limited, "/home/sprite/y", []byte("on disk\n"), 0o644))
	// A reboot: nothing is mounted any more.
	d := filepath.Join(dir, limited)
	require.NoError(t, on.unmountStage(limited, d))
	require.NoError(t, on.unmountOverlays(d))
	require.NoError(t, on.unmountDisk(d))
	require.Empty(t, loopDevicesUnder(t, d))
	require.Equal(t, result{stdout: "on disk\n"}, run(t, off, limited, sh("cat /home/sprite/y")))
	require.Len(t, loopDevicesUnder(t, d), 1)
	require.NoError(t, off.Delete(t.Context(), limited))
	require.Empty(t, loopDevicesUnder(t, d), "Delete with limits off must free the loop device")
	for _, cg := range on.cgroupDirs(limited) {
		require.NoDirExists(t, cg, "Delete with limits off must remove the cgroup")
	}
}

func TestParseCgroupMounts(t *testing.T) {
	t.Parallel()
	const (
		hybrid = `25 18 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
30 25 0:28 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
`
		pure     = "25 18 0:23 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
		noCgroup = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
	)
	ctrls := map[string]string{
		"/sys/fs/cgroup/unified": "",
		"/sys/fs/cgroup":         "cpuset cpu io memory hugetlb pids rdma",
	}
	read := func(mnt string) ([]byte, error) {
		c, ok := ctrls[mnt]
		if !ok {
			return nil, os.ErrNotExist
		}
		return []byte(c), nil
	}
	h, err := parseCgroupMounts(strings.NewReader(hybrid), read)
	require.NoError(t, err)
	require.Equal(t, cgroupHost{v1: map[string]string{"cpu": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}}, h,
		"an empty unified hierarchy next to v1 controllers: v1")
	h, err = parseCgroupMounts(strings.NewReader(pure), read)
	require.NoError(t, err)
	require.Equal(t, cgroupHost{v2: "/sys/fs/cgroup", v2CPU: true}, h)
	_, err = parseCgroupMounts(strings.NewReader(noCgroup), read)
	require.ErrorContains(t, err, "no cgroup hierarchy with the memory and pids controllers")
	_, err = parseCgroupMounts(strings.NewReader("29 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"), read)
	require.Error(t, err, "memory without pids is not enough")
	require.Equal(t, "/a b", unescapeMount(`/a\040b`))
}
