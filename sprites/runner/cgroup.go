package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupParent is the cgroup, under the root of each hierarchy, that holds
// every sandbox's cgroup: <root>/aod/<dir key>-<sandbox name>. The path is
// derived from the runner's directory and the sandbox's name only, so a new
// Runner (after a restart) finds the cgroups of the sandboxes it did not
// create.
const cgroupParent = "aod"

// cgroupV1Dir is one v1 hierarchy's cgroup of a sandbox.
type cgroupV1Dir struct {
	// Controller is the hierarchy's controller ("memory", "pids", "cpu").
	Controller string `json:"controller"`
	// Mount is where the hierarchy is mounted.
	Mount string `json:"mount"`
	// Dir is the sandbox's cgroup directory in it.
	Dir string `json:"dir"`
}

// cgroupHost says how this host offers the controllers the limits need.
type cgroupHost struct {
	// v2 is the mount point of the unified hierarchy when it has the
	// memory and pids controllers (and cpu when available).
	v2 string
	// v2CPU says the unified hierarchy has the cpu controller.
	v2CPU bool
	// v1 maps controller → mount point of its v1 hierarchy, when v2 is not
	// used.
	v1 map[string]string
}

// v1Controllers are the v1 hierarchies the limits use; memory and pids are
// required, cpu only for a CPU quota.
var v1Controllers = []string{"memory", "pids", "cpu"}

// detectCgroups finds the cgroup hierarchies in /proc/self/mountinfo:
// cgroup v2 where the unified hierarchy has the memory and pids
// controllers, else the v1 memory and pids (and cpu) hierarchies.
func detectCgroups() (cgroupHost, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cgroupHost{}, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return parseCgroupMounts(f, func(mnt string) ([]byte, error) {
		return os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
	})
}

// parseCgroupMounts picks the hierarchies from a mountinfo listing;
// controllers reads a unified hierarchy's cgroup.controllers.
func parseCgroupMounts(mountinfo io.Reader, controllers func(mnt string) ([]byte, error)) (cgroupHost, error) {
	h := cgroupHost{v1: map[string]string{}}
	var unified []string
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 3 {
			continue
		}
		mnt := unescapeMount(lf[4])
		switch rf[0] {
		case "cgroup2":
			unified = append(unified, mnt)
		case "cgroup":
			for _, opt := range strings.Split(rf[2], ",") {
				if slices.Contains(v1Controllers, opt) {
					if _, seen := h.v1[opt]; !seen {
						h.v1[opt] = mnt
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return cgroupHost{}, fmt.Errorf("read mounts: %w", err)
	}
	for _, mnt := range unified {
		b, err := controllers(mnt)
		if err != nil {
			continue
		}
		ctrls := strings.Fields(string(b))
		if slices.Contains(ctrls, "memory") && slices.Contains(ctrls, "pids") {
			return cgroupHost{v2: mnt, v2CPU: slices.Contains(ctrls, "cpu")}, nil
		}
	}
	if h.v1["memory"] == "" || h.v1["pids"] == "" {
		return cgroupHost{}, errors.New("no cgroup hierarchy with the memory and pids controllers is mounted (cgroup v2 with them enabled, or the v1 memory and pids hierarchies)")
	}
	return h, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupName is the sandbox's cgroup path below each hierarchy's root.
func (r *Runner) cgroupName(name string) string {
	return filepath.Join(cgroupParent, r.dirKey+"-"+name)
}

// sandboxLimits describes where the sandbox's limits live, for the shim;
// nil with limits off.
func (r *Runner) sandboxLimits(name string) *execLimits {
	if r.limits.Off {
		return nil
	}
	return r.cgroupPaths(name)
}

// cgroupPaths describes the sandbox's cgroup on this host (whether or not
// it exists).
func (r *Runner) cgroupPaths(name string) *execLimits {
	l := &execLimits{Memory: r.limits.Memory, Pids: r.limits.Pids, NoFile: r.limits.NoFile}
	rel := r.cgroupName(name)
	if r.cg.v2 != "" {
		l.CgroupV2 = filepath.Join(r.cg.v2, rel)
		l.OOMFile = filepath.Join(l.CgroupV2, "memory.events")
		l.PidsFile = filepath.Join(l.CgroupV2, "pids.events")
		return l
	}
	for _, c := range v1Controllers {
		if mnt, ok := r.cg.v1[c]; ok {
			l.CgroupV1 = append(l.CgroupV1, cgroupV1Dir{Controller: c, Mount: mnt, Dir: filepath.Join(mnt, rel)})
		}
	}
	if mem, ok := r.cg.v1["memory"]; ok {
		l.OOMFile = filepath.Join(mem, rel, "memory.oom_control")
	}
	if pids, ok := r.cg.v1["pids"]; ok {
		l.PidsFile = filepath.Join(pids, rel, "pids.events")
	}
	return l
}

// cgroupDirs lists the sandbox's cgroup directories (one on v2, one per
// hierarchy on v1), also with limits off (the sandbox may have been made
// with limits on).
func (r *Runner) cgroupDirs(name string) []string {
	if r.cgErr != nil {
		return nil
	}
	l := r.cgroupPaths(name)
	if l.CgroupV2 != "" {
		return []string{l.CgroupV2}
	}
	var dirs []string
	for _, c := range l.CgroupV1 {
		dirs = append(dirs, c.Dir)
	}
	return dirs
}

// ensureCgroup creates the sandbox's cgroup with its limits unless it
// exists (it does not after a reboot). Limits are written when the cgroup
// is made: a changed configuration applies to sandboxes created after it.
func (r *Runner) ensureCgroup(name string) error {
	if r.limits.Off {
		return nil
	}
	if r.cgErr != nil {
		return fmt.Errorf("%w: %v", errLimitsUnavailable, r.cgErr)
	}
	lim := r.limits
	rel := r.cgroupName(name)
	if r.cg.v2 != "" {
		ctrls := "+memory +pids"
		if r.cg.v2CPU {
			ctrls += " +cpu"
		}
		parent := filepath.Join(r.cg.v2, cgroupParent)
		if err := ensureDir(parent); err != nil {
			return fmt.Errorf("create cgroup %s: %w", parent, err)
		}
		for _, d := range []string{r.cg.v2, parent} {
			if err := writeCgroup(d, "cgroup.subtree_control", ctrls); err != nil {
				return err
			}
		}
		dir := filepath.Join(r.cg.v2, rel)
		if created, err := mkdirNew(dir); err != nil || !created {
			return err
		}
		files := [][2]string{
			{"memory.max", strconv.FormatInt(lim.Memory, 10)},
			{"pids.max", strconv.FormatInt(lim.Pids, 10)},
		}
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			files = append(files, [2]string{"memory.swap.max", strconv.FormatInt(lim.Swap, 10)})
		}
		if r.cg.v2CPU {
			files = append(files, [2]string{"cpu.max", cpuMax(lim.CPU)})
		}
		for _, f := range files {
			if err := writeCgroup(dir, f[0], f[1]); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range v1Controllers {
		mnt, ok := r.cg.v1[c]
		if !ok {
			if c == "cpu" && lim.CPU > 0 {
				r.logger.Warn("runner: no cgroup cpu hierarchy: the sandbox CPU quota is not enforced")
			}
			continue
		}
		dir := filepath.Join(mnt, rel)
		if err := ensureDir(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("create cgroup %s: %w", filepath.Dir(dir), err)
		}
		created, err := mkdirNew(dir)
		if err != nil {
			return err
		}
		if !created {
			continue
		}
		var files [][2]string
		switch c {
		case "memory":
			files = append(files, [2]string{"memory.limit_in_bytes", strconv.FormatInt(lim.Memory, 10)})
			if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
				files = append(files, [2]string{"memory.memsw.limit_in_bytes", strconv.FormatInt(lim.Memory+lim.Swap, 10)})
			} else if lim.Swap == 0 {
				files = append(files, [2]string{"memory.swappiness", "0"})
			}
		case "pids":
			files = append(files, [2]string{"pids.max", strconv.FormatInt(lim.Pids, 10)})
		case "cpu":
			quota := "-1"
			if lim.CPU > 0 {
				quota = strconv.FormatInt(int64(lim.CPU*cpuPeriod), 10)
			}
			files = append(files, [2]string{"cpu.cfs_period_us", strconv.Itoa(cpuPeriod)}, [2]string{"cpu.cfs_quota_us", quota})
		}
		for _, f := range files {
			if err := writeCgroup(dir, f[0], f[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// cpuPeriod is the CFS period in microseconds for the CPU quota.
const cpuPeriod = 100000

func cpuMax(cores float64) string {
	if cores <= 0 {
		return "max " + strconv.Itoa(cpuPeriod)
	}
	return fmt.Sprintf("%d %d", int64(cores*cpuPeriod), cpuPeriod)
}

// mkdirNew creates dir and reports whether it did (false: it existed).
func mkdirNew(dir string) (bool, error) {
	err := os.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrExist):
		return false, nil
	}
	return false, fmt.Errorf("create cgroup %s: %w", dir, err)
}

func writeCgroup(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("set %s of cgroup %s to %q: %w", file, dir, value, err)
	}
	return nil
}

// cgroupProcs returns the pids in the sandbox's cgroups.
func (r *Runner) cgroupProcs(name string) ([]int, error) {
	var pids []int
	for _, dir := range r.cgroupDirs(name) {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// cgroupRemoveBudget bounds how long removeCgroup waits for the killed
// processes to leave the cgroup.
const cgroupRemoveBudget = 5 * time.Second

// removeCgroup kills whatever is left in the sandbox's cgroup and removes
// it. A missing cgroup is not an error.
func (r *Runner) removeCgroup(ctx context.Context, name string) error {
	deadline := time.Now().Add(cgroupRemoveBudget)
	for _, dir := range r.cgroupDirs(name) {
		for {
			err := syscall.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				return fmt.Errorf("remove cgroup %s: %w", dir, err)
			}
			if time.Now().After(deadline) {
				pids, _ := r.cgroupProcs(name)
				return fmt.Errorf("remove cgroup %s: processes %v still in it after %s", dir, pids, cgroupRemoveBudget)
			}
			// Processes left behind (an exec whose shim died): kill them.
			if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
				if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
					for f := range bytes.FieldsSeq(b) {
						if pid, err := strconv.Atoi(string(f)); err == nil {
							_ = syscall.Kill(pid, syscall.SIGKILL)
						}
					}
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("remove cgroup %s: %w", dir, context.Cause(ctx))
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// threadCgroupV1 returns the directory of the calling thread's cgroup in
// the v1 hierarchy of c.
func threadCgroupV1(c cgroupV1Dir) (string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), c.Controller) {
			return filepath.Join(c.Mount, parts[2]), nil
		}
	}
	return "", fmt.Errorf("own cgroup in the %s hierarchy not found", c.Controller)
}
