package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/aodhq/aod/sprites"
)

// Network modes for Config.Network.
const (
	// NetworkPrivate gives each exec its own network namespace with outbound
	// access through slirp4netns, filtered so that the host's own
	// addresses, private, link-local and loopback ranges are not reachable.
	NetworkPrivate = "private"
	// NetworkHost shares the host's network (development and tests only).
	NetworkHost = "host"
)

// Errors returned by the runner. Match them with [errors.Is].
var (
	// ErrNotFound means the sandbox or exec does not exist.
	ErrNotFound = errors.New("runner: not found")
	// ErrExists means the sandbox already exists.
	ErrExists = errors.New("runner: sandbox already exists")
)

// Config configures a Runner.
type Config struct {
	// Dir holds the sandboxes, one directory each: Dir/<name>.
	Dir string
	// Network is NetworkPrivate (the default when empty) or NetworkHost.
	Network string
	// ShimArgv is the argv that starts the exec shim. The default is this
	// executable; AOD_EXEC_SHIM=1 is always added to its environment, and the
	// program must call MaybeRunShim first.
	ShimArgv []string
	// ExtraBinds are bound into every sandbox (for tests).
	ExtraBinds []Bind
	// EgressHosts, for tests, maps host names to the "ip:port" the
	// allow-list proxy connects to for them instead of resolving them, so
	// a test reaches a loopback server by an allowed name. The policy
	// still decides whether a name is allowed.
	EgressHosts map[string]string
	// Limits bounds each sandbox's memory, processes, CPU, disk and open
	// files; the zero value is the defaults (see Limits).
	Limits Limits
	// Logger receives diagnostics; nil means slog.Default().
	Logger *slog.Logger
	// UIDBase and UIDCount are the range of unprivileged host uids given to
	// sandboxes, one each (0: DefaultUIDBase, DefaultUIDCount).
	UIDBase, UIDCount int
	// StageDir is the host directory where sandbox directories are
	// bind-mounted for bubblewrap (empty: DefaultStageDir).
	StageDir string
}

// Bind is an extra bind mount from the host into every sandbox.
type Bind struct {
	Src, Dst string
	ReadOnly bool
}

// Spec is a command to start in a sandbox.
type Spec struct {
	// Argv is the command; there is no shell.
	Argv []string
	// Dir is the working directory inside; empty means /home/sprite.
	Dir string
	// Stdin is written to the command's stdin, followed by EOF. nil means EOF
	// at once.
	Stdin []byte
	// Interactive makes stdin a pipe the caller writes while the command
	// runs (Proc.Stdin; closing it is EOF) instead of Stdin's bytes. The
	// pipe lives as long as the Proc value that Start returned: a command
	// whose writer is gone reads EOF.
	Interactive bool
	// Env, when non-nil, replaces the command's whole default environment
	// (KEY=VALUE entries), as Sprites' exec env= does.
	Env []string
}

// Runner creates sandboxes under one directory and runs commands in them.
// It is safe for concurrent use. Several Runners (also in other processes)
// may share a Dir, as long as they do not operate on the same sandbox at the
// same time.
type Runner struct {
	cfg      Config
	dir      string // absolute
	logger   *slog.Logger
	shimArgv []string

	// uidBase, uidCount and stage are cfg's with defaults applied; dirKey
	// names dir under stage.
	uidBase, uidCount int
	stage, dirKey     string

	// lookPathFunc finds host programs (exec.LookPath; replaced in tests).
	lookPathFunc func(string) (string, error)

	limits Limits     // with defaults
	cg     cgroupHost // the cgroup hierarchies, unless cgErr
	cgErr  error      // why limits cannot be enforced

	tmplMu    sync.Mutex
	templates map[int64]*diskTemplate // by size (disk.go)

	mu sync.Mutex // serialises mounting and unmounting

	// bwrapChecked caches bwrapVersionProblem per bwrap path: Check runs
	// for every health check and session create.
	bwrapChecked sync.Map // path → problem ("" when fine)
}

// bwrapVersionProblem runs bwrap --help once per path and says what is
// wrong with that bubblewrap ("" if nothing).
func (r *Runner) bwrapVersionProblem(bwrap string) string {
	if p, ok := r.bwrapChecked.Load(bwrap); ok {
		return p.(string)
	}
	help, err := exec.Command(bwrap, "--help").Output()
	if err != nil {
		// Not cached: it may be a passing failure.
		return fmt.Sprintf("bubblewrap (%s --help) does not run: %v", bwrap, err)
	}
	p := bwrapProblem(help)
	r.bwrapChecked.Store(bwrap, p)
	return p
}

// New returns a Runner for cfg. It creates cfg.Dir if needed; it does not
// check the host (see Check).
func New(cfg Config) (*Runner, error) {
	if cfg.Dir == "" {
		return nil, errors.New("runner: Config.Dir is required")
	}
	switch cfg.Network {
	case "":
		cfg.Network = NetworkPrivate
	case NetworkPrivate, NetworkHost:
	default:
		return nil, fmt.Errorf("runner: unknown network mode %q (want %q or %q)", cfg.Network, NetworkPrivate, NetworkHost)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("runner: data dir: %w", err)
	}
	if strings.ContainsAny(dir, ",:") {
		return nil, fmt.Errorf("runner: data dir %q must not contain ',' or ':' (overlayfs mount options)", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runner: create data dir: %w", err)
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = DefaultUIDBase
	}
	if cfg.UIDCount == 0 {
		cfg.UIDCount = DefaultUIDCount
	}
	if cfg.UIDBase < MinUIDBase || cfg.UIDCount < 1 || int64(cfg.UIDBase)+int64(cfg.UIDCount) > MaxUID {
		return nil, fmt.Errorf("runner: sandbox uid range [%d, %d) must lie within [%d, %d)", cfg.UIDBase, int64(cfg.UIDBase)+int64(cfg.UIDCount), MinUIDBase, int64(MaxUID))
	}
	stage := cfg.StageDir
	if stage == "" {
		stage = DefaultStageDir
	}
	if stage, err = filepath.Abs(stage); err != nil {
		return nil, fmt.Errorf("runner: stage dir: %w", err)
	}
	shimArgv := cfg.ShimArgv
	if len(shimArgv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("runner: find shim executable: %w", err)
		}
		shimArgv = []string{exe}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	limits := cfg.Limits.withDefaults()
	if err := limits.validate(); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	r := &Runner{
		cfg: cfg, dir: dir, logger: logger, shimArgv: shimArgv, lookPathFunc: exec.LookPath,
		uidBase: cfg.UIDBase, uidCount: cfg.UIDCount, stage: stage, dirKey: dirKey(dir),
		limits: limits,
	}
	// Detected also with limits off, to remove the cgroups of sandboxes
	// made with limits on.
	r.cg, r.cgErr = detectCgroups()
	return r, nil
}

// Check reports whether this host can run sandboxes. The error names
// everything that is missing and how to install it.
func (r *Runner) Check() error {
	var problems []string
	if bwrap, err := r.lookPathFunc("bwrap"); err != nil {
		problems = append(problems, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
	} else if p := r.bwrapVersionProblem(bwrap); p != "" {
		problems = append(problems, p)
	}
	if p := userNamespaceProblem(os.ReadFile); p != "" {
		problems = append(problems, p)
	}
	if r.cfg.Network == NetworkPrivate {
		if _, err := r.lookPathFunc("slirp4netns"); err != nil {
			problems = append(problems, "slirp4netns is not installed (needed for the private sandbox network): apt-get install slirp4netns, or set AOD_LOCAL_NETWORK=host")
		}
	}
	if os.Geteuid() != 0 {
		problems = append(problems, "the local sandbox backend must run as root to mount its overlay filesystems")
	}
	if fss, err := os.ReadFile("/proc/filesystems"); err == nil && !bytes.Contains(fss, []byte("\toverlay\n")) {
		problems = append(problems, "the kernel has no overlay filesystem: modprobe overlay")
	}
	problems = append(problems, r.checkLimits()...)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// sandboxDir returns the sandbox's directory after validating the name.
func (r *Runner) sandboxDir(name string) (string, error) {
	if !nameRE.MatchString(name) {
		return "", fmt.Errorf("invalid sandbox name %q: %w", name, ErrNotFound)
	}
	return filepath.Join(r.dir, name), nil
}

// existing returns the directory of an existing sandbox.
func (r *Runner) existing(name string) (string, error) {
	d, err := r.sandboxDir(name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(d, readyFile)); err != nil {
		return "", fmt.Errorf("sandbox %q: %w", name, ErrNotFound)
	}
	return d, nil
}

const (
	readyFile  = "ready"
	policyFile = "policy.json"
)

// Create creates the sandbox: its directories, its overlays (mounted), and
// its /etc/passwd, /etc/group and /etc/resolv.conf.
func (r *Runner) Create(ctx context.Context, name string) error {
	d, err := r.sandboxDir(name)
	if err != nil {
		return err
	}
	if err := os.Mkdir(d, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("sandbox %q: %w", name, ErrExists)
		}
		return fmt.Errorf("create sandbox %q: %w", name, err)
	}
	if err := r.create(ctx, name, d); err != nil {
		if derr := r.destroy(context.WithoutCancel(ctx), name, d); derr != nil {
			r.logger.Warn("runner: clean up failed sandbox", "sandbox", name, "err", derr)
		}
		return fmt.Errorf("create sandbox %q: %w", name, err)
	}
	r.logger.Debug("runner: sandbox created", "sandbox", name)
	return nil
}

func (r *Runner) create(ctx context.Context, name, d string) error {
	if err := r.ensureLimits(ctx, name, d, true); err != nil {
		return err
	}
	for _, sub := range []string{"home", "tmp", "workspace", "execs"} {
		// home, tmp and workspace exist already on the sandbox's disk.
		if err := os.Mkdir(filepath.Join(d, sub), 0o755); err != nil && !(r.diskLimited() && errors.Is(err, fs.ErrExist)) {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(d, "tmp"), 0o1777); err != nil {
		return err
	}
	uid, err := r.claimUID(name, d)
	if err != nil {
		return err
	}
	if err := r.mountOverlays(d); err != nil {
		return err
	}
	if err := r.chownSandbox(d, uid, true); err != nil {
		return fmt.Errorf("sandbox ownership: %w", err)
	}
	if err := r.writeEtc(name, d); err != nil {
		return fmt.Errorf("write /etc files: %w", err)
	}
	if err := r.mountStage(name, d); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d, readyFile), nil, 0o600)
}

// writeEtc writes the sandbox's passwd, group, hosts and resolv.conf into
// its /etc overlay.
func (r *Runner) writeEtc(name, d string) error {
	if !hostDirIsDir("etc") {
		return nil
	}
	root, err := os.OpenRoot(filepath.Join(d, "root", "etc"))
	if err != nil {
		return err
	}
	defer root.Close()
	passwd, _ := root.ReadFile("passwd")
	passwd = replaceEntry(passwd, "sprite:x:1000:1000:sprite:/home/sprite:/bin/bash", 2)
	group, _ := root.ReadFile("group")
	group = replaceEntry(group, "sprite:x:1000:", 2)
	resolv := []byte("nameserver 10.0.2.3\n")
	if r.cfg.Network == NetworkHost {
		if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
			resolv = b
		}
	}
	hosts := fmt.Appendf(nil, "127.0.0.1\tlocalhost %[1]s\n::1\tlocalhost ip6-localhost ip6-loopback %[1]s\n", name)
	// The sandbox user cannot read the host's private files under /etc
	// (shadow, TLS and SSH keys): they belong to root. Hide their names as
	// well: everything that is not world-readable.
	if err := hidePrivate(root, "/etc"); err != nil {
		return fmt.Errorf("hide private files: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"passwd", passwd}, {"group", group}, {"resolv.conf", resolv}, {"hosts", hosts},
		{"shadow", []byte("root:*:20000:0:99999:7:::\nsprite:*:20000:0:99999:7:::\n")},
		{"gshadow", []byte("root:*::\nsprite:!::\n")},
	} {
		// Remove first: resolv.conf is often a symlink into /run.
		if err := root.Remove(f.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := root.WriteFile(f.name, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hidePrivate removes, through the overlay root over the host directory
// hostDir, every file and directory of hostDir that is not world-readable
// (the removal only whites them out in the sandbox's upper dir).
func hidePrivate(root *os.Root, hostDir string) error {
	return filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == hostDir {
				return err
			}
			return nil // unreadable entries are hidden by the check below or skipped
		}
		if d.Type()&fs.ModeSymlink != 0 || p == hostDir {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.Mode().Perm()&0o004 != 0 {
			return nil
		}
		rel, err := filepath.Rel(hostDir, p)
		if err != nil {
			return err
		}
		if err := root.RemoveAll(rel); err != nil {
			return fmt.Errorf("hide %s: %w", p, err)
		}
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
}

// replaceEntry drops the lines of a passwd/group file whose name is
// "sprite" or whose id (field idField) is 1000, then appends entry.
func replaceEntry(file []byte, entry string, idField int) []byte {
	var out []byte
	for line := range strings.SplitSeq(string(file), "\n") {
		if line == "" {
			continue
		}
		fields := strings.Split(line, ":")
		if fields[0] == "sprite" || (len(fields) > idField && fields[idField] == "1000") {
			continue
		}
		out = append(out, line...)
		out = append(out, '\n')
	}
	out = append(out, entry...)
	return append(out, '\n')
}

// Exists reports whether the sandbox exists.
func (r *Runner) Exists(name string) bool {
	_, err := r.existing(name)
	return err == nil
}

// Delete kills the sandbox's execs, unmounts its overlays and removes it.
func (r *Runner) Delete(ctx context.Context, name string) error {
	d, err := r.sandboxDir(name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(d); err != nil {
		return fmt.Errorf("sandbox %q: %w", name, ErrNotFound)
	}
	if err := r.destroy(ctx, name, d); err != nil {
		return fmt.Errorf("delete sandbox %q: %w", name, err)
	}
	r.logger.Debug("runner: sandbox deleted", "sandbox", name)
	return nil
}

func (r *Runner) destroy(ctx context.Context, name, d string) error {
	// Mark it gone first so no new execs start.
	if err := os.Remove(filepath.Join(d, readyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	entries, _ := os.ReadDir(filepath.Join(d, "execs"))
	var errs []error
	for _, e := range entries {
		p := &Proc{r: r, name: name, id: e.Name(), dir: filepath.Join(d, "execs", e.Name())}
		if err := p.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := r.unmountStage(name, d); err != nil {
		return err
	}
	if err := r.unmountOverlays(d); err != nil {
		return err
	}
	if err := r.releaseLimits(ctx, name, d); err != nil {
		return err
	}
	r.releaseUID(name, d)
	return os.RemoveAll(d)
}

// WriteFile writes data to the absolute path inside the sandbox, creating
// parent directories, and sets its mode. The file and the directories it
// creates are owned by the sandbox's uid. Nothing but a regular file is
// written, and no symlink is followed (see safefile.go): anything else at
// the path fails with "not a regular file".
func (r *Runner) WriteFile(name, p string, data []byte, mode fs.FileMode) error {
	d, base, rel, err := r.hostPath(name, p)
	if err != nil {
		return err
	}
	uid, err := r.sandboxUID(name, d)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := writeFile(base, rel, data, mode, uid, uid); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// ReadFile reads the regular file at the absolute path inside the sandbox
// (at most 128 MiB).
func (r *Runner) ReadFile(name, p string) ([]byte, error) {
	_, base, rel, err := r.hostPath(name, p)
	if err != nil {
		return nil, err
	}
	b, err := readFile(base, rel)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

// Stat describes the regular file or directory at the absolute path inside
// the sandbox; anything else is an error.
func (r *Runner) Stat(name, p string) (fs.FileInfo, error) {
	_, base, rel, err := r.hostPath(name, p)
	if err != nil {
		return nil, err
	}
	fi, err := statFile(base, rel)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	return fi, nil
}

// ReadDir describes the entries of the directory at the absolute path
// inside the sandbox, sorted by name. Entries are described as they are
// (a symlink as a symlink), never followed.
func (r *Runner) ReadDir(name, p string) ([]fs.FileInfo, error) {
	_, base, rel, err := r.hostPath(name, p)
	if err != nil {
		return nil, err
	}
	out, err := readDir(base, rel)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", p, err)
	}
	return out, nil
}

// Chmod changes the mode of the regular file or directory at the absolute
// path inside the sandbox.
func (r *Runner) Chmod(name, p string, mode fs.FileMode) error {
	_, base, rel, err := r.hostPath(name, p)
	if err != nil {
		return err
	}
	if err := chmodFile(base, rel, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return nil
}

// hostPath maps an absolute path inside the sandbox to the sandbox's
// directory d, the host directory base that backs the path and the path
// relative to base ("." for base itself).
func (r *Runner) hostPath(name, p string) (d, base, rel string, err error) {
	d, err = r.existing(name)
	if err != nil {
		return "", "", "", err
	}
	if !path.IsAbs(p) {
		return "", "", "", fmt.Errorf("path %q is not absolute", p)
	}
	p = path.Clean(p)
	// /bin/x → /usr/bin/x when /bin is a symlink on the host.
	if first, rest, _ := strings.Cut(p[1:], "/"); first != "" {
		if target, ok := hostSymlinks()[first]; ok {
			p = path.Join("/", target, rest)
		}
	}
	mounts := []struct{ inside, host string }{
		{"/home/sprite", "home"},
		{"/workspace", "workspace"},
		{"/tmp", "tmp"},
	}
	for _, sd := range overlayDirs() {
		mounts = append(mounts, struct{ inside, host string }{"/" + sd, filepath.Join("root", sd)})
	}
	for _, m := range mounts {
		rel, ok := strings.CutPrefix(p, m.inside)
		if !ok || (rel != "" && rel[0] != '/') {
			continue
		}
		rel = strings.TrimPrefix(rel, "/")
		if rel == "" {
			rel = "."
		}
		return d, filepath.Join(d, m.host), rel, nil
	}
	return "", "", "", fmt.Errorf("path %s is not in a writable sandbox directory (/home/sprite, /workspace, /tmp, /usr, /etc, /opt): %w", p, fs.ErrPermission)
}

// SetPolicy records the sandbox's network policy. It applies to execs
// started afterwards: no rules is the mode's network (NetworkPrivate:
// filtered egress), a deny-all policy removes the network, any other
// policy is enforced by the allow-list proxy (see the package doc).
func (r *Runner) SetPolicy(name string, p sprites.NetworkPolicy) error {
	d, err := r.existing(name)
	if err != nil {
		return err
	}
	if p.Rules == nil {
		p.Rules = []sprites.Rule{}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode policy: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(d, policyFile), b); err != nil {
		return fmt.Errorf("set policy of %q: %w", name, err)
	}
	return nil
}

// Policy returns the sandbox's network policy (empty: unrestricted).
func (r *Runner) Policy(name string) (sprites.NetworkPolicy, error) {
	d, err := r.existing(name)
	if err != nil {
		return sprites.NetworkPolicy{}, err
	}
	p := sprites.NetworkPolicy{Rules: []sprites.Rule{}}
	b, err := os.ReadFile(filepath.Join(d, policyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("read policy of %q: %w", name, err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("decode policy of %q: %w", name, err)
	}
	return p, nil
}

// writeFileAtomic writes data to a temporary file and renames it over
// name.
func writeFileAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
