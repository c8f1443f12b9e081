package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sandbox identity: every sandbox runs as its own unprivileged host uid
// (and gid of the same number), so uid 1000 "sprite" inside is never host
// root. The shim starts bubblewrap as that uid; non-setuid bubblewrap then
// maps 1000 inside to it in a new user namespace (uid_map "1000 <uid> 1").
// The runner itself stays root to mount the overlays.
//
// The uid is allocated at Create from [Config.UIDBase, UIDBase+UIDCount):
// one claim file per uid under StageDir/uids (a host-wide directory, so
// runners on other data directories never hand out the same uid), recorded
// in the sandbox's "uid" file, released at Delete.
//
// bubblewrap, running as the sandbox uid, must reach the directories it
// binds; the data directory may sit below directories only root can enter
// (0700). So the sandbox directory is bind-mounted (recursively, with its
// overlays) at StageDir/<hash of Dir>/<name>, below directories that
// everybody may traverse but not list (0711); the sandbox directory itself
// is 0710 root:<sandbox gid>, so only that sandbox's uid gets in. The extra
// binds are bind-mounted into the sandbox directory first, so their host
// paths need not be reachable either (their contents must be readable by
// the sandbox uid).

// Defaults for Config.
const (
	// DefaultUIDBase is the first host uid handed to sandboxes. It is far
	// above the ids of ordinary users and of the usual /etc/subuid ranges.
	DefaultUIDBase = 1_000_000_000
	// DefaultUIDCount is how many uids sandboxes may use.
	DefaultUIDCount = 65536
	// MinUIDBase is the lowest allowed UIDBase: above every 16-bit id
	// (ordinary users, nobody 65534).
	MinUIDBase = 65536
	// MaxUID bounds the uid range (4294967295 is (uid_t)-1).
	MaxUID = 4294967294
	// DefaultStageDir is where sandbox directories are bind-mounted for
	// bubblewrap.
	DefaultStageDir = "/run/aod"
)

const (
	uidFile  = "uid"
	bindsDir = "binds"
)

// uidsDir is the host-wide directory of uid claims.
func (r *Runner) uidsDir() string { return filepath.Join(r.stage, "uids") }

// owner identifies the sandbox in a uid claim.
func (r *Runner) owner(name string) string { return filepath.Join(r.dir, name) }

// lockUIDs takes the host-wide lock on uid claims.
func (r *Runner) lockUIDs() (unlock func(), err error) {
	dir := r.uidsDir()
	if err := mkdirAllMode(r.stage, 0o711); err != nil {
		return nil, fmt.Errorf("uid claims: %w", err)
	}
	if err := mkdirAllMode(dir, 0o700); err != nil {
		return nil, fmt.Errorf("uid claims: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("uid claims: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock uid claims: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// claimUID allocates a free uid for the sandbox and records it in d/uid.
func (r *Runner) claimUID(name, d string) (int, error) {
	unlock, err := r.lockUIDs()
	if err != nil {
		return 0, err
	}
	defer unlock()
	owner := r.owner(name)
	h := fnv.New32a()
	h.Write([]byte(owner))
	start := int(h.Sum32() % uint32(r.uidCount))
	for i := range r.uidCount {
		uid := r.uidBase + (start+i)%r.uidCount
		claim := filepath.Join(r.uidsDir(), strconv.Itoa(uid))
		if b, err := os.ReadFile(claim); err == nil {
			if !claimStale(string(b), uid) {
				continue
			}
			if err := os.Remove(claim); err != nil {
				return 0, fmt.Errorf("uid claims: %w", err)
			}
		}
		if err := os.WriteFile(claim, []byte(owner), 0o600); err != nil {
			return 0, fmt.Errorf("claim uid %d: %w", uid, err)
		}
		if err := os.WriteFile(filepath.Join(d, uidFile), []byte(strconv.Itoa(uid)+"\n"), 0o600); err != nil {
			os.Remove(claim)
			return 0, fmt.Errorf("record uid: %w", err)
		}
		return uid, nil
	}
	return 0, fmt.Errorf("no free sandbox uid in [%d, %d): too many sandboxes on this host", r.uidBase, r.uidBase+r.uidCount)
}

// claimStale reports whether the sandbox owning a claim no longer exists
// (its directory was removed without Delete) or no longer holds that uid.
func claimStale(owner string, uid int) bool {
	b, err := os.ReadFile(filepath.Join(owner, uidFile))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && strings.TrimSpace(string(b)) != strconv.Itoa(uid)
}

// sandboxUID returns the sandbox's uid, claiming it again if the claim is
// gone (the host rebooted and StageDir is a tmpfs).
func (r *Runner) sandboxUID(name, d string) (int, error) {
	b, err := os.ReadFile(filepath.Join(d, uidFile))
	if errors.Is(err, fs.ErrNotExist) {
		// Made by an aod that ran sandboxes as root: give it a uid now.
		uid, err := r.claimUID(name, d)
		if err != nil {
			return 0, err
		}
		// Its code has run: do not walk directories it controls (a symlink
		// swapped in could redirect the chown); home and workspace only.
		if err := r.chownSandbox(d, uid, false); err != nil {
			return 0, fmt.Errorf("sandbox ownership: %w", err)
		}
		return uid, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sandbox uid: %w", err)
	}
	uid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || uid <= 0 {
		return 0, fmt.Errorf("sandbox uid: bad %s file %q", uidFile, b)
	}
	claim := filepath.Join(r.uidsDir(), strconv.Itoa(uid))
	if got, err := os.ReadFile(claim); err == nil && string(got) == r.owner(name) {
		return uid, nil
	}
	unlock, err := r.lockUIDs()
	if err != nil {
		return 0, err
	}
	defer unlock()
	switch got, err := os.ReadFile(claim); {
	case err == nil && string(got) == r.owner(name):
	case err == nil && !claimStale(string(got), uid):
		return 0, fmt.Errorf("host uid %d of sandbox %q is claimed by %s", uid, name, got)
	default:
		if err := os.WriteFile(claim, []byte(r.owner(name)), 0o600); err != nil {
			return 0, fmt.Errorf("claim uid %d: %w", uid, err)
		}
	}
	return uid, nil
}

// releaseUID drops the sandbox's uid claim.
func (r *Runner) releaseUID(name, d string) {
	b, err := os.ReadFile(filepath.Join(d, uidFile))
	if err != nil {
		return
	}
	claim := filepath.Join(r.uidsDir(), strings.TrimSpace(string(b)))
	unlock, err := r.lockUIDs()
	if err != nil {
		return
	}
	defer unlock()
	if got, err := os.ReadFile(claim); err == nil && string(got) == r.owner(name) {
		_ = os.Remove(claim)
	}
}

// writableTrees are the system directories (through the sandbox's overlay)
// whose directories, down to writableDepth levels, are owned by the sandbox
// uid, so that installing into them (npm --global, tools under /opt) works
// as it does on a Sprite. Files stay root's: a chown would copy every one
// of them up into the overlay.
var writableTrees = []string{"usr/local", "opt"}

const writableDepth = 2

// chownSandbox gives the sandbox uid its home, workspace and the writable
// trees, and closes the sandbox directory to every other unprivileged uid.
//
// With trees unset the writable trees are left alone: walking them is safe
// only before the sandbox has run anything.
func (r *Runner) chownSandbox(d string, uid int, trees bool) error {
	for _, sub := range []string{"home", "workspace"} {
		if err := os.Lchown(filepath.Join(d, sub), uid, uid); err != nil {
			return err
		}
	}
	for _, sub := range []string{"execs", "overlay"} {
		if err := os.Chmod(filepath.Join(d, sub), 0o700); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, tree := range writableTrees {
		top, _, _ := strings.Cut(tree, "/")
		if !trees || !hostDirIsDir(top) {
			continue
		}
		root := filepath.Join(d, "root", tree)
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if p == root && errors.Is(err, fs.ErrNotExist) {
					return filepath.SkipAll
				}
				return nil // unreadable entries stay root's
			}
			if !e.IsDir() {
				return nil
			}
			if err := os.Lchown(p, uid, uid); err != nil {
				return fmt.Errorf("chown %s: %w", p, err)
			}
			if rel, _ := filepath.Rel(root, p); rel != "." && strings.Count(rel, "/")+1 >= writableDepth {
				return filepath.SkipDir
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := os.Chown(d, 0, uid); err != nil {
		return err
	}
	return os.Chmod(d, 0o710)
}

// stagePath is where the sandbox directory is bind-mounted for bubblewrap.
func (r *Runner) stagePath(name string) string {
	return filepath.Join(r.stage, r.dirKey, name)
}

// dirKey is a short stable key of a runner's data directory: it names the
// directory under StageDir and prefixes the sandboxes' cgroups, so runners
// on different directories share neither.
func dirKey(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(h[:6])
}

// mountStage bind-mounts the extra binds into the sandbox directory and
// the sandbox directory (with its overlays) at its stage path, unless they
// are mounted already. Call it after mountOverlays.
func (r *Runner) mountStage(name, d string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.cfg.ExtraBinds {
		if err := bindInto(b, filepath.Join(d, bindsDir, strconv.Itoa(i))); err != nil {
			return err
		}
	}
	base := filepath.Join(r.stage, r.dirKey)
	if err := mkdirAllMode(base, 0o711); err != nil {
		return fmt.Errorf("stage directory: %w", err)
	}
	mp := r.stagePath(name)
	err := os.Mkdir(mp, 0o700)
	if errors.Is(err, fs.ErrNotExist) {
		// Another runner on this Dir removed base as its last sandbox went.
		if err = mkdirAllMode(base, 0o711); err == nil {
			err = os.Mkdir(mp, 0o700)
		}
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("stage directory: %w", err)
	}
	if mounted, _ := isMountRoot(mp); mounted {
		complete := true
		for _, sd := range overlayDirs() {
			if ok, _ := isMountRoot(filepath.Join(mp, "root", sd)); !ok {
				complete = false
			}
		}
		for i := range r.cfg.ExtraBinds {
			if ok, _ := isMountRoot(filepath.Join(mp, bindsDir, strconv.Itoa(i))); !ok {
				complete = false
			}
		}
		if _, err := os.Stat(filepath.Join(d, diskImage)); err == nil {
			// The sandbox's disk (disk.go) is mounted before the stage.
			for _, sub := range diskDirs {
				if ok, _ := isMountRoot(filepath.Join(mp, sub)); !ok {
					complete = false
				}
			}
		}
		if complete {
			return nil
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount stale %s: %w", mp, err)
		}
	}
	if err := unix.Mount(d, mp, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", d, mp, err)
	}
	if err := unix.Mount("", mp, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s private: %w", mp, err)
	}
	return nil
}

// bindInto bind-mounts b.Src at target (made to match: a directory or an
// empty file), read-only if asked, unless it is mounted already.
func bindInto(b Bind, target string) error {
	if ok, _ := isMountRoot(target); ok {
		return nil
	}
	fi, err := os.Stat(b.Src)
	if err != nil {
		return fmt.Errorf("extra bind: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if fi.IsDir() {
		err = os.Mkdir(target, 0o755)
	} else {
		err = os.WriteFile(target, nil, 0o644)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := unix.Mount(b.Src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", b.Src, target, err)
	}
	if b.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// unmountStage undoes mountStage.
func (r *Runner) unmountStage(name, d string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	mp := r.stagePath(name)
	if ok, _ := isMountRoot(mp); ok {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	if err := os.Remove(mp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(mp)) // the runner's last sandbox: not empty otherwise
	entries, _ := os.ReadDir(filepath.Join(d, bindsDir))
	for _, e := range entries {
		p := filepath.Join(d, bindsDir, e.Name())
		if ok, _ := isMountRoot(p); ok {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	return nil
}

// isMountRoot reports whether p is the root of a mount (also for a bind
// mount of a directory of the same filesystem).
func isMountRoot(p string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return isMountPoint(p)
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// mkdirAllMode makes dir and its missing parents with mode (whatever the
// umask).
func mkdirAllMode(dir string, mode fs.FileMode) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := mkdirAllMode(filepath.Dir(dir), mode); err != nil {
		return err
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chmod(dir, mode)
}

// sandboxCredential is what bwrap runs as: the sandbox's uid and gid, no
// supplementary groups.
func sandboxCredential(uid int) *syscall.Credential {
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}
}

// userNamespaceProblem says why this host would not let bubblewrap, started
// as an unprivileged uid, create the sandbox's user namespace ("" if
// nothing is wrong). read reads a file (a sysctl under /proc/sys).
func userNamespaceProblem(read func(string) ([]byte, error)) string {
	sysctl := func(name string) (string, bool) {
		b, err := read("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		return strings.TrimSpace(string(b)), err == nil
	}
	if v, ok := sysctl("user.max_user_namespaces"); ok && v == "0" {
		return "user namespaces are disabled (user.max_user_namespaces=0): sysctl -w user.max_user_namespaces=10000"
	}
	if v, ok := sysctl("kernel.unprivileged_userns_clone"); ok && v == "0" {
		return "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0), which the sandboxes' unprivileged uids need: sysctl -w kernel.unprivileged_userns_clone=1"
	}
	if v, ok := sysctl("kernel.apparmor_restrict_unprivileged_userns"); ok && v == "1" {
		return "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1), which the sandboxes' unprivileged uids need: allow them for /usr/bin/bwrap with an AppArmor profile (\"userns,\"), or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
	}
	return ""
}

// bwrapProblem says why the installed bubblewrap cannot run sandboxes (""
// if it can): --disable-userns needs bubblewrap 0.8.
func bwrapProblem(help []byte) string {
	if !strings.Contains(string(help), "--disable-userns") {
		return "bubblewrap is too old (the sandboxes need --disable-userns, bubblewrap 0.8 or newer): apt-get install bubblewrap from Debian 12 or newer"
	}
	return ""
}
