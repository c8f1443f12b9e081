package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/sprites"
)

// Files in an exec's spool directory.
const (
	specFile   = "spec.json"
	stdinFile  = "stdin"
	stdoutFile = "stdout"
	stderrFile = "stderr"
	exitFile   = "exit"
	pidFile    = "pid"
	lockFile   = "lock"
	shimLog    = "shim.log"
)

// lostExitCode is reported for an exec whose shim died without recording
// an exit code (as if the command had been killed with SIGKILL).
const lostExitCode = 128 + int(syscall.SIGKILL)

// chunkSize is the largest chunk Watch delivers.
const chunkSize = 64 << 10

// fallbackPoll bounds how long Watch sleeps without an inotify wake-up.
const fallbackPoll = 200 * time.Millisecond

// shimSpec is what Start hands the shim in execs/<id>/spec.json.
type shimSpec struct {
	// Bwrap is bwrap's argv after the program name, ending with "--" and the
	// command.
	Bwrap []string `json:"bwrap"`
	// Env is the command's environment.
	Env []string `json:"env"`
	// Slirp asks for a new network namespace connected by slirp4netns,
	// with the egress filter.
	Slirp bool `json:"slirp"`
	// Proxy asks for a new network namespace with only lo and the
	// allow-list proxy on it.
	Proxy *proxySpec `json:"proxy,omitempty"`
	// Stdin says the stdin file holds the command's input.
	Stdin bool `json:"stdin"`
	// UID is the sandbox's unprivileged host uid (and gid): the shim starts
	// bwrap as it.
	UID int `json:"uid"`
	// Limits places the command in the sandbox's cgroup and sets its
	// rlimits; nil without limits.
	Limits *execLimits `json:"limits,omitempty"`
}

// pidRecord is what the shim writes to execs/<id>/pid once the command
// runs.
type pidRecord struct {
	Shim int `json:"shim"`
	// Pgid is the outer bwrap's pid and the command's process group.
	Pgid int `json:"pgid"`
	// Init is the sandbox's pid 1 (bwrap's init), the command's parent.
	Init int `json:"init"`
}

// Proc is an exec: a command started in a sandbox by this or an earlier
// owner. It is safe for concurrent use.
type Proc struct {
	r    *Runner
	name string
	id   string
	dir  string
	// stdin is the write end of an interactive command's stdin FIFO.
	stdin *os.File
}

// Stdin returns the write end of an interactive command's stdin (Spec.
// Interactive), nil otherwise. Close it for EOF. Writes block while the
// pipe is full; use SetWriteDeadline to bound them.
func (p *Proc) Stdin() *os.File { return p.stdin }

// ID returns the exec id, unique within the sandbox.
func (p *Proc) ID() string { return p.id }

func newExecID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start starts spec in the sandbox and returns once the command runs. The
// command belongs to no process of the caller: it keeps running, and its
// output keeps being recorded, when the caller exits.
func (r *Runner) Start(ctx context.Context, name string, spec Spec) (*Proc, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("start: empty argv")
	}
	d, err := r.existing(name)
	if err != nil {
		return nil, err
	}
	if err := r.ensureLimits(ctx, name, d, false); err != nil { // after a reboot
		return nil, fmt.Errorf("start in %q: %w", name, err)
	}
	if err := r.mountOverlays(d); err != nil { // after a reboot
		return nil, fmt.Errorf("start in %q: %w", name, err)
	}
	uid, err := r.sandboxUID(name, d)
	if err != nil {
		return nil, fmt.Errorf("start in %q: %w", name, err)
	}
	if err := r.mountStage(name, d); err != nil {
		return nil, fmt.Errorf("start in %q: %w", name, err)
	}
	policy, err := r.Policy(name)
	if err != nil {
		return nil, err
	}
	cwd := spec.Dir
	if cwd == "" {
		cwd = "/home/sprite"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("start: working directory %q is not absolute", cwd)
	}
	network := r.cfg.Network
	switch {
	case policy.DenyAll():
		network = "none"
	case len(policy.Rules) > 0:
		network = networkProxy
	}
	ss := shimSpec{
		Bwrap: r.bwrapArgs(name, r.stagePath(name), network, cwd, spec.Argv),
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
			"HOME=/home/sprite",
			"USER=sprite",
			"LOGNAME=sprite",
			"SHELL=/bin/bash",
			"LANG=C.UTF-8",
			"TERM=xterm-256color",
		},
		Slirp:  network == NetworkPrivate,
		Stdin:  spec.Stdin != nil || spec.Interactive,
		UID:    uid,
		Limits: r.sandboxLimits(name),
	}
	if spec.Env != nil {
		ss.Env = slices.Clone(spec.Env)
	}
	if network == networkProxy {
		ss.Proxy = &proxySpec{Rules: policy.Rules, Override: r.cfg.EgressHosts}
		ss.Env = append(ss.Env, proxyEnv()...)
	}

	id := newExecID()
	p := &Proc{r: r, name: name, id: id, dir: filepath.Join(d, "execs", id)}
	if err := os.Mkdir(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("start in %q: %w", name, err)
	}
	specJSON, err := json.Marshal(ss)
	if err != nil {
		return nil, fmt.Errorf("start: encode spec: %w", err)
	}
	files := map[string][]byte{specFile: specJSON, stdoutFile: nil, stderrFile: nil}
	if spec.Stdin != nil && !spec.Interactive {
		files[stdinFile] = spec.Stdin
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(p.dir, f), b, 0o600); err != nil {
			return nil, fmt.Errorf("start in %q: %w", name, err)
		}
	}
	if spec.Interactive {
		// A FIFO held open read-write here (close-on-exec, so neither the
		// shim nor the command inherits this writer): the shim's open for
		// reading does not block, and the command reads EOF once it is
		// closed.
		fifo := filepath.Join(p.dir, stdinFile)
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			return nil, fmt.Errorf("start in %q: stdin pipe: %w", name, err)
		}
		if p.stdin, err = os.OpenFile(fifo, os.O_RDWR, 0); err != nil {
			return nil, fmt.Errorf("start in %q: stdin pipe: %w", name, err)
		}
	}
	if err := r.launchShim(ctx, p); err != nil {
		if p.stdin != nil {
			p.stdin.Close()
		}
		if _, exited := p.readExit(); !exited {
			_ = writeExit(p.dir, shimFailedExitCode)
		}
		return nil, fmt.Errorf("start in %q: %w", name, err)
	}
	r.logger.Debug("runner: exec started", "sandbox", name, "exec", id, "argv", spec.Argv)
	return p, nil
}

// bwrapArgs builds bubblewrap's arguments for one command; d is the
// sandbox's stage path (see mountStage).
func (r *Runner) bwrapArgs(name, d, network, cwd string, argv []string) []string {
	a := []string{
		"--die-with-parent",
		"--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns",
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--hostname", name,
	}
	if network == "none" {
		a = append(a, "--unshare-net")
	}
	for _, sd := range overlayDirs() {
		a = append(a, "--bind", filepath.Join(d, "root", sd), "/"+sd)
	}
	for _, sd := range systemDirs {
		if target, ok := hostSymlinks()[sd]; ok {
			a = append(a, "--symlink", target, "/"+sd)
		}
	}
	a = append(a,
		"--proc", "/proc",
		"--dev", "/dev",
		"--bind", filepath.Join(d, "home"), "/home/sprite",
		"--bind", filepath.Join(d, "tmp"), "/tmp",
		"--bind", filepath.Join(d, "workspace"), "/workspace",
	)
	for i, b := range r.cfg.ExtraBinds {
		op := "--bind"
		if b.ReadOnly {
			op = "--ro-bind"
		}
		a = append(a, op, filepath.Join(d, bindsDir, strconv.Itoa(i)), b.Dst)
	}
	a = append(a, "--chdir", cwd, "--")
	return append(a, argv...)
}

// launchShim starts the shim for p and waits until the command runs.
func (r *Runner) launchShim(ctx context.Context, p *Proc) error {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	logf, err := os.OpenFile(filepath.Join(p.dir, shimLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		readyW.Close()
		return err
	}
	defer logf.Close()
	cmd := exec.Command(r.shimArgv[0], r.shimArgv[1:]...)
	// Nothing of aod's environment (DATABASE_URL, keys, tokens) reaches the
	// shim, and so neither slirp4netns, bwrap nor the sandbox.
	cmd.Env = shimEnviron(p.dir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start shim %s: %w", r.shimArgv[0], err)
	}
	// Reap the shim whenever it ends; it does not depend on us.
	go func() { _ = cmd.Wait() }()

	type result struct {
		msg []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(readyR)
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		msg := strings.TrimSpace(string(res.msg))
		if msg == "ok" {
			return nil
		}
		if msg == "" {
			log, _ := os.ReadFile(filepath.Join(p.dir, shimLog))
			msg = "shim exited without starting the command: " + strings.TrimSpace(string(log))
		}
		return errors.New(msg)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		_ = p.Kill(syscall.SIGKILL)
		return context.Cause(ctx)
	}
}

// Open returns the sandbox's exec with the given id, running or finished,
// for example after the owner restarted. A missing sandbox or exec gives an
// error matching ErrNotFound.
func (r *Runner) Open(name, id string) (*Proc, error) {
	d, err := r.existing(name)
	if err != nil {
		return nil, err
	}
	if id == "" || id != filepath.Base(id) || strings.HasPrefix(id, ".") {
		return nil, fmt.Errorf("exec %q: %w", id, ErrNotFound)
	}
	p := &Proc{r: r, name: name, id: id, dir: filepath.Join(d, "execs", id)}
	if _, err := os.Stat(filepath.Join(p.dir, specFile)); err != nil {
		return nil, fmt.Errorf("exec %q in %q: %w", id, name, ErrNotFound)
	}
	return p, nil
}

// Exit returns the command's exit code (128+N for death by signal N) once
// it has exited.
func (p *Proc) Exit() (code int, exited bool) {
	if code, ok := p.readExit(); ok {
		return code, true
	}
	if p.shimGone() {
		// The shim may have written the exit file just before it went away.
		if code, ok := p.readExit(); ok {
			return code, true
		}
		return lostExitCode, true
	}
	return 0, false
}

func (p *Proc) readExit() (int, bool) {
	b, err := os.ReadFile(filepath.Join(p.dir, exitFile))
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return lostExitCode, true
	}
	return code, true
}

// shimGone reports whether the shim has ended (it holds the lock file for
// its whole life; the lock is taken before Start returns).
func (p *Proc) shimGone() bool {
	if _, err := os.Stat(filepath.Join(p.dir, pidFile)); err != nil {
		return false // still starting
	}
	f, err := os.Open(filepath.Join(p.dir, lockFile))
	if err != nil {
		return true
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return false
	}
	return true
}

func (p *Proc) readPid() (pidRecord, error) {
	var rec pidRecord
	b, err := os.ReadFile(filepath.Join(p.dir, pidFile))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("decode %s: %w", pidFile, err)
	}
	return rec, nil
}

// Kill sends sig to the command's process group inside the sandbox (so
// the command sees it, as from a terminal, and its exit status says how it
// ended). SIGKILL also ends bubblewrap itself. Killing a command that has
// exited is not an error.
func (p *Proc) Kill(sig syscall.Signal) error {
	if _, exited := p.Exit(); exited {
		return nil
	}
	rec, err := p.readPid()
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("kill exec %s: not started yet", p.id)
	}
	if err != nil {
		return fmt.Errorf("kill exec %s: %w", p.id, err)
	}
	if sig != syscall.SIGKILL && rec.Init > 0 {
		// Signal the processes under bwrap, not bwrap, which would die of
		// it and leave the sandbox's init behind. Right after Start the
		// command may not be forked yet: wait for it a little.
		deadline := time.Now().Add(killStartWait)
		for {
			n, err := signalGroup(rec.Pgid, sig, rec.Pgid, rec.Init)
			if err != nil {
				return fmt.Errorf("kill exec %s: %w", p.id, err)
			}
			if n > 0 || time.Now().After(deadline) {
				return nil
			}
			if _, exited := p.Exit(); exited {
				return nil
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if err := unix.Kill(-rec.Pgid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill exec %s: %w", p.id, err)
	}
	return nil
}

// killStartWait bounds how long Kill waits for a just-started command to
// appear.
const killStartWait = 2 * time.Second

// signalGroup sends sig to every live process of process group pgid except
// the given pids, and returns how many it signalled.
func signalGroup(pgid int, sig syscall.Signal, except ...int) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := strconv.Itoa(pgid)
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(except, pid) {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[2] != want || f[0] == "Z" {
			continue
		}
		if err := unix.Kill(pid, sig); err == nil {
			n++
		}
	}
	return n, nil
}

// stop kills the command and waits for its shim to end.
func (p *Proc) stop(ctx context.Context) error {
	if _, exited := p.Exit(); exited {
		return nil
	}
	_ = p.Kill(syscall.SIGKILL)
	start := time.Now()
	killedShim := false
	for !p.shimGone() {
		if _, exited := p.readExit(); exited {
			break
		}
		switch waited := time.Since(start); {
		case waited > 10*time.Second:
			return fmt.Errorf("stop exec %s: its shim does not end", p.id)
		case waited > 5*time.Second && !killedShim:
			// The shim's death kills bwrap (parent-death signal).
			if rec, err := p.readPid(); err == nil && rec.Shim > 0 {
				_ = unix.Kill(rec.Shim, syscall.SIGKILL)
			}
			killedShim = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop exec %s: %w", p.id, context.Cause(ctx))
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Watch delivers output from the given per-stream offsets as it is written
// (stdout and stderr interleaved as they arrive, each in order, in chunks of
// at most 64 KiB), then one Event{Exited: true}. It returns nil after the
// exit event, the context's error when ctx ends, or fn's error. fn is called
// from the calling goroutine; a slow fn slows reading (backpressure), nothing
// is dropped. Data slices are not reused.
func (p *Proc) Watch(ctx context.Context, from sprites.Offsets, fn func(sprites.Event) error) error {
	type stream struct {
		s sprites.Stream
		f *os.File
	}
	var streams []stream
	for _, s := range []struct {
		s    sprites.Stream
		name string
		off  int64
	}{{sprites.Stdout, stdoutFile, from.Stdout}, {sprites.Stderr, stderrFile, from.Stderr}} {
		f, err := os.Open(filepath.Join(p.dir, s.name))
		if err != nil {
			return fmt.Errorf("watch exec %s: %w", p.id, err)
		}
		defer f.Close()
		if s.off > 0 {
			if _, err := f.Seek(s.off, io.SeekStart); err != nil {
				return fmt.Errorf("watch exec %s: %w", p.id, err)
			}
		}
		streams = append(streams, stream{s.s, f})
	}

	w := newDirWaker(p.dir, p.r)
	defer w.close()

	buf := make([]byte, chunkSize)
	for {
		code, exited := p.Exit()
		// Drain both streams to their current end.
		for {
			progressed := false
			for _, s := range streams {
				n, err := s.f.Read(buf)
				if n > 0 {
					progressed = true
					if err := fn(sprites.Event{Stream: s.s, Data: bytes.Clone(buf[:n])}); err != nil {
						return err
					}
				}
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("watch exec %s: read %s: %w", p.id, s.s, err)
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if !progressed {
				break
			}
		}
		if exited {
			return fn(sprites.Event{Exited: true, ExitCode: code})
		}
		if err := w.wait(ctx); err != nil {
			return err
		}
		if _, err := os.Stat(p.dir); err != nil {
			// The sandbox was deleted.
			return fmt.Errorf("watch exec %s: %w", p.id, ErrNotFound)
		}
	}
}
