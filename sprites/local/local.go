// Package local implements [sprites.Backend] with sandboxes on this
// machine, run by package runner under bubblewrap: a per-sandbox overlay
// over the host's system directories, uid 1000 "sprite" in a user namespace
// (an unprivileged host uid outside, a seccomp filter, no nested user
// namespaces), a private network through slirp4netns with egress filtering
// (or the host's), only lo for a deny-all policy, an allow-list proxy for a
// policy with allow rules, and execs that outlive the aod process and can be
// re-attached from any byte offset. See package runner for the details.
//
// Programs using this package must call runner.MaybeRunShim first in main
// (and tests first in TestMain).
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/egress"
	"github.com/aodhq/aod/sprites/runner"
)

// errClosed is returned by Next after Close.
var errClosed = errors.New("local: exec stream closed")

// eventBuffer is how many events an Exec holds between the reader and
// Next; when it is full the reader waits (backpressure).
const eventBuffer = 16

// Config configures the local backend.
type Config struct {
	// Dir holds the sandboxes (AOD_DATA_DIR/sandboxes).
	Dir string
	// Network is runner.NetworkPrivate (default) or runner.NetworkHost
	// (AOD_LOCAL_NETWORK=host).
	Network string
	// ShimArgv overrides the exec shim's argv (see runner.Config).
	ShimArgv []string
	// ExtraBinds are bound into every sandbox (for tests).
	ExtraBinds []runner.Bind
	// EgressHosts maps names to test servers for the allow-list proxy (for
	// tests; see runner.Config).
	EgressHosts map[string]string
	// Limits bounds each sandbox's resources; the zero value is the
	// defaults (see runner.Limits).
	Limits runner.Limits
	// Logger receives diagnostics; nil means slog.Default().
	Logger *slog.Logger
	// UIDBase and UIDCount are the range of unprivileged host uids the
	// sandboxes run as, one each (AOD_LOCAL_UID_BASE, AOD_LOCAL_UID_COUNT;
	// 0: the runner's defaults).
	UIDBase, UIDCount int
}

// Backend runs sandboxes on this machine. It is safe for concurrent use.
type Backend struct {
	r *runner.Runner
}

var _ sprites.Backend = (*Backend)(nil)

// New returns a local backend over a runner on cfg.Dir. It does not check
// the host; call Check for that.
func New(cfg Config) (*Backend, error) {
	r, err := runner.New(runner.Config{
		Dir:         cfg.Dir,
		Network:     cfg.Network,
		ShimArgv:    cfg.ShimArgv,
		ExtraBinds:  cfg.ExtraBinds,
		EgressHosts: cfg.EgressHosts,
		Limits:      cfg.Limits,
		Logger:      cfg.Logger,
		UIDBase:     cfg.UIDBase,
		UIDCount:    cfg.UIDCount,
	})
	if err != nil {
		return nil, fmt.Errorf("local backend: %w", err)
	}
	return &Backend{r: r}, nil
}

// Runner returns the process runner under the backend.
func (b *Backend) Runner() *runner.Runner { return b.r }

// Check reports whether bubblewrap, slirp4netns (for the private network),
// root, overlayfs and what the resource limits need (cgroup controllers,
// loop devices, mkfs.ext4) are available; the error says what to install.
func (b *Backend) Check(ctx context.Context) error {
	return b.r.Check()
}

// Create creates the sandbox. An existing name gives an *sprites.Error with
// Status 409.
func (b *Backend) Create(ctx context.Context, name string) (*sprites.Info, error) {
	if err := b.r.Create(ctx, name); err != nil {
		if errors.Is(err, runner.ErrExists) {
			return nil, &sprites.Error{Status: http.StatusConflict, Code: "already_exists", Message: err.Error(), Op: "create sandbox"}
		}
		return nil, mapErr("create sandbox", err)
	}
	return info(name), nil
}

// Get returns the sandbox, or an error matching sprites.ErrNotFound.
func (b *Backend) Get(ctx context.Context, name string) (*sprites.Info, error) {
	if !b.r.Exists(name) {
		return nil, notFound("get sandbox", fmt.Sprintf("sandbox %q not found", name))
	}
	return info(name), nil
}

func info(name string) *sprites.Info {
	return &sprites.Info{ID: name, Name: name, Status: "running"}
}

// Delete kills the sandbox's commands and removes it.
func (b *Backend) Delete(ctx context.Context, name string) error {
	return mapErr("delete sandbox", b.r.Delete(ctx, name))
}

// WriteFile writes data to the absolute path inside the sandbox, creating
// parent directories.
func (b *Backend) WriteFile(ctx context.Context, name, path string, data []byte, mode fs.FileMode) error {
	return mapErr("write file", b.r.WriteFile(name, path, data, mode))
}

// Chmod changes the mode of an absolute path inside the sandbox.
func (b *Backend) Chmod(ctx context.Context, name, path string, mode fs.FileMode) error {
	return mapErr("chmod", b.r.Chmod(name, path, mode))
}

// SetNetworkPolicy applies the policy to commands started afterwards:
// no rules is unrestricted (internet only, see package runner), a deny-all
// policy leaves only lo, and an allow-list is enforced by the sandbox's
// egress proxy (package egress). A rule the backend cannot apply (see
// egress.Validate) fails with a message naming it.
func (b *Backend) SetNetworkPolicy(ctx context.Context, name string, policy sprites.NetworkPolicy) error {
	if err := egress.Validate(policy); err != nil {
		return fmt.Errorf("invalid network policy: %w", err)
	}
	return mapErr("set network policy", b.r.SetPolicy(name, policy))
}

// Exec starts a command. The returned Exec must be closed; closing it does
// not stop the command.
func (b *Backend) Exec(ctx context.Context, name string, req sprites.ExecRequest) (sprites.Exec, error) {
	p, err := b.r.Start(ctx, name, runner.Spec{Argv: req.Argv, Dir: req.Dir, Stdin: req.Stdin})
	if err != nil {
		return nil, mapErr("exec", err)
	}
	return newExec(p, sprites.Offsets{}), nil
}

// Attach re-attaches to a running or finished command, skipping the bytes
// before from in each stream.
func (b *Backend) Attach(ctx context.Context, name, execID string, from sprites.Offsets) (sprites.Exec, error) {
	p, err := b.r.Open(name, execID)
	if err != nil {
		return nil, mapErr("attach", err)
	}
	return newExec(p, from), nil
}

// Kill sends a signal ("TERM", "SIGKILL", "INT", "9", ...) to a running
// command. Killing a command that has exited is not an error.
func (b *Backend) Kill(ctx context.Context, name, execID, signal string) error {
	sig, err := ParseSignal(signal)
	if err != nil {
		return err
	}
	p, err := b.r.Open(name, execID)
	if err != nil {
		return mapErr("kill", err)
	}
	return mapErr("kill", p.Kill(sig))
}

// ParseSignal parses a signal name with or without the SIG prefix, in any
// case ("TERM", "sigkill"), or a signal number. Empty means SIGTERM.
func ParseSignal(s string) (syscall.Signal, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "" {
		return syscall.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	if sig := unix.SignalNum(s); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// mapErr turns runner errors into sprites errors: a missing sandbox or exec
// becomes an *sprites.Error with Status 404 (matching sprites.ErrNotFound).
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, runner.ErrNotFound):
		return notFound(op, err.Error())
	}
	return fmt.Errorf("%s: %w", op, err)
}

func notFound(op, msg string) error {
	return &sprites.Error{Status: http.StatusNotFound, Code: "not_found", Message: msg, Op: op}
}

// execStream is a sprites.Exec fed by runner.Proc.Watch through a small
// bounded channel.
type execStream struct {
	id     string
	events chan sprites.Event
	done   chan struct{} // closed when the watcher ends; err is set then
	err    error
	cancel context.CancelFunc

	mu       sync.Mutex
	offsets  sprites.Offsets
	finished bool
	closed   bool
}

func newExec(p *runner.Proc, from sprites.Offsets) *execStream {
	ctx, cancel := context.WithCancel(context.Background())
	e := &execStream{
		id:      p.ID(),
		events:  make(chan sprites.Event, eventBuffer),
		done:    make(chan struct{}),
		cancel:  cancel,
		offsets: from,
	}
	go func() {
		defer close(e.done)
		e.err = p.Watch(ctx, from, func(ev sprites.Event) error {
			select {
			case e.events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return e
}

// ID returns the exec id.
func (e *execStream) ID() string { return e.id }

// Next returns the next output chunk or the exit event, then io.EOF.
func (e *execStream) Next(ctx context.Context) (sprites.Event, error) {
	e.mu.Lock()
	finished, closed := e.finished, e.closed
	e.mu.Unlock()
	switch {
	case closed:
		return sprites.Event{}, errClosed
	case finished:
		return sprites.Event{}, io.EOF
	}
	select {
	case ev := <-e.events:
		return e.deliver(ev), nil
	case <-ctx.Done():
		return sprites.Event{}, ctx.Err()
	case <-e.done:
		// Everything the watcher produced is in the channel already.
		select {
		case ev := <-e.events:
			return e.deliver(ev), nil
		default:
		}
		e.mu.Lock()
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return sprites.Event{}, errClosed
		}
		if e.err != nil {
			return sprites.Event{}, fmt.Errorf("exec %s: %w: %v", e.id, sprites.ErrTransportLost, e.err)
		}
		return sprites.Event{}, io.EOF
	}
}

func (e *execStream) deliver(ev sprites.Event) sprites.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case ev.Exited:
		e.finished = true
	case ev.Stream == sprites.Stdout:
		e.offsets.Stdout += int64(len(ev.Data))
	case ev.Stream == sprites.Stderr:
		e.offsets.Stderr += int64(len(ev.Data))
	}
	return ev
}

// Offsets returns the bytes delivered by Next so far per stream, counting
// from the start of the output (Attach's offsets included).
func (e *execStream) Offsets() sprites.Offsets {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.offsets
}

// Close stops reading; the command keeps running.
func (e *execStream) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	<-e.done
	return nil
}
