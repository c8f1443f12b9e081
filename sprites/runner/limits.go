package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Default resource limits of a sandbox (see Limits).
const (
	DefaultMemory = 2 << 30  // 2 GiB
	DefaultPids   = 512      // processes and threads
	DefaultCPU    = 2.0      // cores
	DefaultDisk   = 10 << 30 // 10 GiB
	DefaultNoFile = 4096     // open files per process
)

// Limits bounds the resources of each sandbox. Zero fields take the
// defaults; the zero value is the default limits, on.
//
// Memory, swap, processes and CPU are enforced by one cgroup per sandbox
// (cgroup v2 when the unified hierarchy has the memory and pids controllers,
// else the v1 memory, pids and cpu hierarchies); the disk by a sparse ext4
// image per sandbox, loop-mounted, that holds home, /tmp, /workspace and the
// overlays' upper dirs; open files by RLIMIT_NOFILE set before bubblewrap
// starts.
type Limits struct {
	// Off runs sandboxes without any limit (unsafe: one sandbox can exhaust
	// the host's memory, processes and disk).
	Off bool
	// Memory is the memory limit in bytes (default 2 GiB). A process that
	// exceeds it is killed by the kernel (exit 137) and the exec's stderr
	// says so.
	Memory int64
	// Swap is how much swap the sandbox may use on top of Memory (default
	// 0). Without swap accounting (cgroup v1 without memsw) it cannot be
	// enforced; the host's swap is then usable.
	Swap int64
	// Pids is the most processes and threads at once (default 512).
	Pids int64
	// CPU is a hard quota in cores (default 2; negative: no quota, only an
	// equal share with the other sandboxes under contention).
	CPU float64
	// Disk is the size of the sandbox's filesystem in bytes (default 10 GiB).
	Disk int64
	// NoFile is RLIMIT_NOFILE (soft and hard) of every sandbox process
	// (default 4096).
	NoFile uint64
}

// withDefaults fills in the zero fields.
func (l Limits) withDefaults() Limits {
	if l.Memory == 0 {
		l.Memory = DefaultMemory
	}
	if l.Pids == 0 {
		l.Pids = DefaultPids
	}
	if l.CPU == 0 {
		l.CPU = DefaultCPU
	}
	if l.Disk == 0 {
		l.Disk = DefaultDisk
	}
	if l.NoFile == 0 {
		l.NoFile = DefaultNoFile
	}
	return l
}

// validate rejects limits the kernel would refuse or that leave no room to
// run anything.
func (l Limits) validate() error {
	if l.Off {
		return nil
	}
	switch {
	case l.Memory < 16<<20:
		return fmt.Errorf("memory limit %d is below 16 MiB", l.Memory)
	case l.Swap < 0:
		return fmt.Errorf("swap limit %d is negative", l.Swap)
	case l.Pids < 8:
		return fmt.Errorf("process limit %d is below 8", l.Pids)
	case l.Disk < 16<<20:
		return fmt.Errorf("disk limit %d is below 16 MiB", l.Disk)
	case l.NoFile < 64:
		return fmt.Errorf("open files limit %d is below 64", l.NoFile)
	}
	return nil
}

// FormatBytes renders n in binary units the way the limit messages and
// the README write them: "2 GiB", "256 MiB", "1.5 GiB", "100 B".
func FormatBytes(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		switch {
		case n < 1<<u.shift:
		case n%(1<<u.shift) == 0:
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		default:
			return fmt.Sprintf("%.1f %s", float64(n)/float64(int64(1)<<u.shift), u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// ParseBytes parses a size: a number of bytes, or a number with a unit K,
// M, G or T (binary: 1K = 1024), optionally followed by "iB" or "B"
// ("2GiB", "512M", "64MiB", "1073741824").
func ParseBytes(s string) (int64, error) {
	v := strings.TrimSpace(s)
	num := strings.TrimRight(v, "KMGTiBkmgtb ")
	unit := strings.ToUpper(strings.TrimSpace(v[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 2GiB, 512MiB or bytes)", s)
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit (use K, M, G or T)", s)
	}
	b := n * float64(int64(1)<<sh)
	if b > 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(b), nil
}

// execLimits is what the shim needs to enforce the limits for one exec
// (part of shimSpec).
type execLimits struct {
	// CgroupV2 is the sandbox's cgroup directory on the unified hierarchy;
	// bwrap is cloned into it (CLONE_INTO_CGROUP).
	CgroupV2 string `json:"cgroup_v2,omitempty"`
	// CgroupV1 are the sandbox's cgroup directories, one per v1 hierarchy;
	// the thread that starts bwrap joins them first, so bwrap is born in
	// them.
	CgroupV1 []cgroupV1Dir `json:"cgroup_v1,omitempty"`
	// OOMFile holds the cgroup's "oom_kill N" counter (memory.events or
	// memory.oom_control).
	OOMFile string `json:"oom_file,omitempty"`
	// PidsFile holds the cgroup's "max N" count of forks refused at the
	// process limit (pids.events).
	PidsFile string `json:"pids_file,omitempty"`
	// Memory and Pids are the limits, for the messages.
	Memory int64 `json:"memory"`
	Pids   int64 `json:"pids"`
	// NoFile is RLIMIT_NOFILE for bwrap and everything under it.
	NoFile uint64 `json:"nofile"`
}

// applyRlimits sets the shim's own RLIMIT_NOFILE (soft and hard), which
// bwrap and every sandbox process inherit and cannot raise. It must run
// before bwrap starts. syscall.Setrlimit also stops the Go runtime from
// restoring the original soft limit in children.
func (l *execLimits) applyRlimits() error {
	if l == nil || l.NoFile == 0 {
		return nil
	}
	lim := syscall.Rlimit{Cur: l.NoFile, Max: l.NoFile}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("set RLIMIT_NOFILE to %d: %w", l.NoFile, err)
	}
	return nil
}

// enter places the next process that the calling (locked) OS thread starts
// in the sandbox's cgroup: on v2 by CLONE_INTO_CGROUP through attr, on v1 by
// moving this thread into the cgroups. The returned function, called once
// the process started, moves the thread back and releases what enter took.
func (l *execLimits) enter(attr *syscall.SysProcAttr) (leave func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	if l.CgroupV2 != "" {
		fd, err := unix.Open(l.CgroupV2, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open cgroup %s: %w", l.CgroupV2, err)
		}
		attr.UseCgroupFD, attr.CgroupFD = true, fd
		return func() { unix.Close(fd) }, nil
	}
	if len(l.CgroupV1) == 0 {
		return func() {}, nil
	}
	// The thread's current cgroups, to return to.
	var back []string
	for _, c := range l.CgroupV1 {
		orig, err := threadCgroupV1(c)
		if err != nil {
			return nil, err
		}
		back = append(back, orig)
	}
	// "0" is the writing thread. Moving only it (not a whole process)
	// spares the kernel the global threadgroup lock, whose write side costs
	// an RCU grace period (5-20 ms) per move.
	tid := []byte("0")
	leave = func() {
		for _, orig := range back {
			_ = os.WriteFile(filepath.Join(orig, "tasks"), tid, 0)
		}
	}
	for _, c := range l.CgroupV1 {
		if err := os.WriteFile(filepath.Join(c.Dir, "tasks"), tid, 0); err != nil {
			leave()
			return nil, fmt.Errorf("join cgroup %s: %w", c.Dir, err)
		}
	}
	return leave, nil
}

// limitCounts are the cgroup's counters of limit hits.
type limitCounts struct {
	oomKills     int64 // processes killed at the memory limit
	forksRefused int64 // forks refused at the process limit
}

// counts reads the sandbox cgroup's counters of limit hits.
func (l *execLimits) counts() limitCounts {
	var c limitCounts
	if l == nil {
		return c
	}
	if b, err := os.ReadFile(l.OOMFile); err == nil && l.OOMFile != "" {
		c.oomKills = flatKey(b, "oom_kill")
	}
	if b, err := os.ReadFile(l.PidsFile); err == nil && l.PidsFile != "" {
		c.forksRefused = flatKey(b, "max")
	}
	return c
}

// oomMessage is appended to an exec's stderr when the memory limit killed
// one of the sandbox's processes while it ran.
func oomMessage(limit int64) string {
	return fmt.Sprintf("aod: sandbox memory limit (%s) reached; process killed\n", FormatBytes(limit))
}

// pidsMessage is appended to an exec's stderr when the process limit
// refused forks while it ran.
func pidsMessage(limit int64) string {
	return fmt.Sprintf("aod: sandbox process limit (%d) reached; new processes were refused\n", limit)
}

// noteLimits appends, on lines of their own, a message for each limit the
// sandbox hit since before to the stderr spool. The cgroup is the
// sandbox's: a hit by another exec running at the same time is reported
// to both.
func (l *execLimits) noteLimits(stderrPath string, before limitCounts) error {
	if l == nil {
		return nil
	}
	now := l.counts()
	var msg string
	if now.forksRefused > before.forksRefused {
		msg += pidsMessage(l.Pids)
	}
	if now.oomKills > before.oomKills {
		msg += oomMessage(l.Memory)
	}
	if msg == "" {
		return nil
	}
	f, err := os.OpenFile(stderrPath, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], fi.Size()-1); err == nil && last[0] != '\n' {
			msg = "\n" + msg
		}
	}
	_, err = f.WriteString(msg)
	return err
}

// flatKey returns the value of "key N" in a cgroup flat-keyed file.
func flatKey(b []byte, key string) int64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// reapBudget bounds how long the shim waits for the processes of a killed
// exec to be gone before it records the exit.
const reapBudget = 5 * time.Second

// reapOrphans waits, for at most budget, for the children the shim
// inherited as a subreaper (the sandbox's init when bwrap died before it:
// the init's exit comes after every process of its pid namespace is gone),
// so the exit is recorded only once the exec's processes are gone and their
// process slots in the cgroup are free again.
func reapOrphans(budget time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var ws unix.WaitStatus
			_, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil { // ECHILD: none left
				return
			}
		}
	}()
	t := time.NewTimer(budget)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// errLimitsUnavailable is wrapped by Check and Create when limits are on
// but cannot be enforced.
var errLimitsUnavailable = errors.New("sandbox resource limits cannot be enforced")

// ensureDir creates dir (and parents) unless it exists.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// diskLimited says new sandboxes live on their own disk images.
func (r *Runner) diskLimited() bool { return !r.limits.Off }

// ensureLimits makes the sandbox's cgroup unless it exists, and mounts its
// disk unless it is mounted: at Create (create set: the disk image is made
// too), and at Start, after a reboot. A sandbox that has a disk image gets
// it mounted even with limits off; one made without (limits off, or an
// older aod) keeps its directories on the host's disk.
func (r *Runner) ensureLimits(ctx context.Context, name, d string, create bool) error {
	if !r.limits.Off {
		if err := r.ensureCgroup(name); err != nil {
			return fmt.Errorf("sandbox limits: %w", err)
		}
	}
	if err := r.ensureDisk(ctx, d, create && !r.limits.Off); err != nil {
		return fmt.Errorf("sandbox disk: %w", err)
	}
	return nil
}

// releaseLimits unmounts the sandbox's disk (freeing its loop device) and
// removes its cgroup, after its execs ended and its overlays are unmounted.
func (r *Runner) releaseLimits(ctx context.Context, name, d string) error {
	if err := r.unmountDisk(d); err != nil {
		return fmt.Errorf("sandbox disk: %w", err)
	}
	if err := r.removeCgroup(ctx, name); err != nil {
		return fmt.Errorf("sandbox limits: %w", err)
	}
	return nil
}

// checkLimits lists what keeps the limits from being enforced.
func (r *Runner) checkLimits() []string {
	if r.limits.Off {
		return nil
	}
	const off = "; AOD_LOCAL_LIMITS=off runs sandboxes without limits (unsafe)"
	var problems []string
	if r.cgErr != nil {
		problems = append(problems, fmt.Sprintf("%v: %v%s", errLimitsUnavailable, r.cgErr, off))
	}
	if _, err := mkfsPath(r.lookPathFunc); err != nil {
		problems = append(problems, "mkfs.ext4 is not installed (needed for the sandbox disk limit): apt-get install e2fsprogs"+off)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		problems = append(problems, "no loop devices (/dev/loop-control; needed for the sandbox disk limit): modprobe loop"+off)
	}
	return problems
}
