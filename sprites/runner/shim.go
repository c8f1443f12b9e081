package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables that turn a process into an exec shim.
const (
	shimEnv    = "AOD_EXEC_SHIM"
	shimDirEnv = "AOD_EXEC_DIR"
)

// shimFailedExitCode is recorded when the shim could not start the
// command.
const shimFailedExitCode = 127

// slirpTimeout bounds how long the shim waits for slirp4netns to set up the
// network.
const slirpTimeout = 10 * time.Second

// MaybeRunShim runs the exec shim and exits the process when the
// environment asks for it (AOD_EXEC_SHIM=1); otherwise it returns at once.
// Call it first in main and in TestMain of every package that starts execs.
func MaybeRunShim() {
	if os.Getenv(shimEnv) != "1" {
		return
	}
	dir := os.Getenv(shimDirEnv)
	// fd 3 is inherited without close-on-exec; keep it from bwrap.
	unix.CloseOnExec(3)
	ready := os.NewFile(3, "ready")
	if err := runShim(dir, ready); err != nil {
		fmt.Fprintf(os.Stderr, "aod exec shim %s: %v\n", dir, err)
		if _, serr := os.Stat(filepath.Join(dir, exitFile)); serr != nil && dir != "" {
			_ = writeExit(dir, shimFailedExitCode)
		}
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
		}
		os.Exit(1)
	}
	os.Exit(0)
}

// runShim runs the command described in dir/spec.json under bwrap, with
// the spool files as its output, and records its exit code. It writes "ok"
// to ready once the command runs (or returns an error before that).
func runShim(dir string, ready *os.File) error {
	if dir == "" {
		return errors.New(shimDirEnv + " is not set")
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// Held until the command has been reaped and its exit code recorded
	// (or the shim dies): Proc.shimGone tests it.
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer lock.Close()
	b, err := os.ReadFile(filepath.Join(dir, specFile))
	if err != nil {
		return err
	}
	var spec shimSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	stdin := filepath.Join(dir, stdinFile)
	if !spec.Stdin {
		stdin = os.DevNull
	}
	in, err := os.Open(stdin)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(dir, stdoutFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	errf, err := os.OpenFile(filepath.Join(dir, stderrFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		return fmt.Errorf("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
	}

	// bwrap writes the pid of the sandbox's init to the info fd once it has
	// made the namespaces.
	infoR, infoW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer infoR.Close()
	if spec.UID < MinUIDBase {
		// Never fall back to running the sandbox as root.
		return fmt.Errorf("spec has no unprivileged sandbox uid (%d)", spec.UID)
	}
	filter, err := seccompFile()
	if err != nil {
		return err
	}
	defer filter.Close()
	cmd := exec.Command(bwrap, append([]string{"--info-fd", "3", "--seccomp", "4"}, spec.Bwrap...)...)
	cmd.Env = spec.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, errf
	cmd.ExtraFiles = []*os.File{infoW, filter}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: sandboxCredential(spec.UID)}
	if err := spec.Limits.applyRlimits(); err != nil {
		infoW.Close()
		return err
	}
	netw, err := shimNetwork(spec)
	if err != nil {
		infoW.Close()
		return err
	}
	if netw.stop != nil {
		defer netw.stop()
	}
	// Adopt the sandbox's init if bwrap dies before it, to wait for it.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	hitsBefore := spec.Limits.counts()
	slirp, slirpExit, err := startBwrap(cmd, netw, spec.Limits)
	infoW.Close()
	if err != nil {
		return err
	}
	if slirpExit != nil {
		defer slirpExit.Close()
	}
	in.Close()
	out.Close()
	errf.Close()
	var info struct {
		ChildPid int `json:"child-pid"`
	}
	// A bwrap that fails early writes nothing; its exit code tells.
	_ = json.NewDecoder(infoR).Decode(&info)
	rec, _ := json.Marshal(pidRecord{Shim: os.Getpid(), Pgid: cmd.Process.Pid, Init: info.ChildPid})
	if err := writeFileAtomic(filepath.Join(dir, pidFile), rec); err != nil {
		_ = unix.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return fmt.Errorf("write pid: %w", err)
	}
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	}

	waitErr := cmd.Wait()
	code := 0
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = ps.ExitCode()
		}
	} else if waitErr != nil {
		code = lostExitCode
	}
	// Whatever is left of the sandbox dies now: its init (in the process
	// group) takes the rest of the pid namespace with it.
	_ = unix.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if slirp != nil {
		_ = slirp.Process.Kill()
		_ = slirp.Wait()
	}
	reapOrphans(reapBudget)
	if err := spec.Limits.noteLimits(filepath.Join(dir, stderrFile), hitsBefore); err != nil {
		fmt.Fprintf(os.Stderr, "aod exec shim %s: note the limits hit: %v\n", dir, err)
	}
	if err := writeExit(dir, code); err != nil {
		return fmt.Errorf("write exit code: %w", err)
	}
	return nil
}

func writeExit(dir string, code int) error {
	return writeFileAtomic(filepath.Join(dir, exitFile), []byte(strconv.Itoa(code)+"\n"))
}

// startBwrap starts cmd (bwrap) from a locked OS thread that lives as long
// as the shim. Linux ties a parent-death signal (Pdeathsig here, and the one
// bwrap --die-with-parent sets) to the thread that started the process, so
// this makes bwrap, and with it the command, die with the shim and only
// then.
//
// With netw.newNet set, cmd starts in a new network namespace, set up by
// netw.inside (egress filter or proxy listener) and, with netw.slirp,
// connected to the outside by slirp4netns (without access to the host's
// loopback), fully configured before the command runs. The namespace is
// made on the locked thread; slirp4netns is started from an ordinary
// thread, in the host's namespace, and exits when the returned file is
// closed (or this process ends).
func startBwrap(cmd *exec.Cmd, netw netSetup, limits *execLimits) (slirp *exec.Cmd, slirpExit *os.File, err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	type created struct {
		netns *os.File
		err   error
	}
	createdc := make(chan created, 1)
	proceed := make(chan bool, 1)
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread may have left the host's network
		// namespace, and bwrap's parent-death signal is tied to it.
		runtime.LockOSThread()
		var c created
		if netw.newNet {
			c.netns, c.err = newNetworkNamespace()
			if c.err == nil && netw.inside != nil {
				if c.err = netw.inside(c.netns); c.err != nil {
					c.netns.Close()
				}
			}
		}
		createdc <- c
		if c.err != nil || !<-proceed {
			return // the locked thread ends with the goroutine
		}
		// bwrap is born in the sandbox's cgroup (cgroup.go).
		leave, err := limits.enter(cmd.SysProcAttr)
		if err == nil {
			err = cmd.Start()
			leave()
		}
		started <- err
		select {} // keep the thread for the shim's lifetime
	}()
	c := <-createdc
	if c.err != nil {
		return nil, nil, c.err
	}
	if netw.newNet {
		defer c.netns.Close()
	}
	if netw.slirp {
		if slirp, slirpExit, err = startSlirp(c.netns); err != nil {
			proceed <- false
			return nil, nil, err
		}
	}
	proceed <- true
	if err := <-started; err != nil {
		if slirp != nil {
			slirpExit.Close()
			_ = slirp.Process.Kill()
			_ = slirp.Wait()
		}
		return nil, nil, fmt.Errorf("start bwrap: %w", err)
	}
	return slirp, slirpExit, nil
}

// newNetworkNamespace moves the calling (locked) thread into a new network
// namespace with lo up and returns the namespace.
func newNetworkNamespace() (*os.File, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("new network namespace: %w", err)
	}
	netns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	if err := loopbackUp(); err != nil {
		netns.Close()
		return nil, fmt.Errorf("bring up lo: %w", err)
	}
	return netns, nil
}

// startSlirp connects netns to the outside with slirp4netns and returns
// once the network is configured. slirp4netns runs as root because it must
// join netns, which belongs to the host's user namespace (so the sandbox
// cannot reconfigure it); --enable-sandbox then moves it into an empty
// mount namespace and drops every capability but CAP_NET_BIND_SERVICE, and
// --enable-seccomp filters its system calls. Its environment is empty.
func startSlirp(netns *os.File) (*exec.Cmd, *os.File, error) {
	slirpPath, err := exec.LookPath("slirp4netns")
	if err != nil {
		return nil, nil, errors.New("slirp4netns is not installed: apt-get install slirp4netns")
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, nil, err
	}
	slirp := exec.Command(slirpPath,
		"--configure", "--disable-host-loopback", "--mtu=65520",
		"--enable-sandbox", "--enable-seccomp",
		"--ready-fd=3", "--exit-fd=4",
		"--netns-type=path", "/proc/self/fd/5", "tap0")
	slirp.ExtraFiles = []*os.File{readyW, exitR, netns}
	slirp.Env = slirpEnviron()
	var stderr limitedBuffer
	slirp.Stdout = io.Discard
	slirp.Stderr = &stderr
	err = slirp.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return nil, nil, fmt.Errorf("start slirp4netns: %w", err)
	}
	fail := func(msg string) (*exec.Cmd, *os.File, error) {
		exitW.Close()
		_ = slirp.Process.Kill()
		_ = slirp.Wait()
		return nil, nil, fmt.Errorf("%s: %s", msg, stderr.String())
	}
	readyErr := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := readyR.Read(b[:])
		readyErr <- err
	}()
	select {
	case err := <-readyErr:
		if err != nil {
			return fail("slirp4netns failed")
		}
	case <-time.After(slirpTimeout):
		return fail(fmt.Sprintf("slirp4netns not ready after %s", slirpTimeout))
	}
	return slirp, exitW, nil
}

// loopbackUp brings up lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
