package app

import (
	"context"
	"io"
	"io/fs"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/aodhq/aod/sprites"
)

// memBackend is an in-memory sprites.Backend for benchmarks: sandboxes are
// names in a map, files are discarded, and execs never start a process.
// Provisioning execs (no stdin) exit 0 at once. The agent exec of a turn
// (stdin = the prompt) either prints one line and exits 0 (park=false) or
// parks: its Next blocks, without output, until its context ends or it is
// killed (park=true), which is an idle but live session actor.
type memBackend struct {
	park bool

	mu        sync.Mutex
	sandboxes map[string]struct{}
	execs     map[string]*memExec
	nextID    atomic.Int64
	agentRuns atomic.Int64
}

func newMemBackend(park bool) *memBackend {
	return &memBackend{park: park, sandboxes: map[string]struct{}{}, execs: map[string]*memExec{}}
}

var _ sprites.Backend = (*memBackend)(nil)

func (b *memBackend) Check(context.Context) error { return nil }

func (b *memBackend) Create(_ context.Context, name string) (*sprites.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.sandboxes[name]; ok {
		return nil, &sprites.Error{Status: 409, Message: "sandbox exists", Op: "create " + name}
	}
	b.sandboxes[name] = struct{}{}
	return &sprites.Info{ID: name, Name: name, Status: "running"}, nil
}

func (b *memBackend) exists(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.sandboxes[name]; !ok {
		return sprites.ErrNotFound
	}
	return nil
}

func (b *memBackend) Get(_ context.Context, name string) (*sprites.Info, error) {
	if err := b.exists(name); err != nil {
		return nil, err
	}
	return &sprites.Info{ID: name, Name: name, Status: "running"}, nil
}

func (b *memBackend) Delete(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.sandboxes[name]; !ok {
		return sprites.ErrNotFound
	}
	delete(b.sandboxes, name)
	return nil
}

func (b *memBackend) WriteFile(_ context.Context, name, _ string, _ []byte, _ fs.FileMode) error {
	return b.exists(name)
}

func (b *memBackend) Chmod(_ context.Context, name, _ string, _ fs.FileMode) error {
	return b.exists(name)
}

func (b *memBackend) SetNetworkPolicy(_ context.Context, name string, _ sprites.NetworkPolicy) error {
	return b.exists(name)
}

func (b *memBackend) Exec(_ context.Context, name string, req sprites.ExecRequest) (sprites.Exec, error) {
	if err := b.exists(name); err != nil {
		return nil, err
	}
	id := "exec-" + strconv.FormatInt(b.nextID.Add(1), 10)
	agent := req.Stdin != nil
	if !agent {
		return &memExec{id: id}, nil
	}
	b.agentRuns.Add(1)
	if !b.park {
		return &memExec{id: id, out: []byte("{\"type\":\"result\",\"result\":\"done\"}\n")}, nil
	}
	e := &memExec{id: id, parked: true, killed: make(chan struct{}), b: b}
	b.mu.Lock()
	b.execs[id] = e
	b.mu.Unlock()
	return e, nil
}

func (b *memBackend) Attach(context.Context, string, string, sprites.Offsets) (sprites.Exec, error) {
	return nil, sprites.ErrNotFound
}

func (b *memBackend) Kill(_ context.Context, _, execID, _ string) error {
	b.mu.Lock()
	e := b.execs[execID]
	delete(b.execs, execID)
	b.mu.Unlock()
	if e != nil {
		e.killOnce.Do(func() { close(e.killed) })
	}
	return nil
}

// memExec is one command: optional output, then exit 0 — or parked.
type memExec struct {
	id       string
	out      []byte
	step     int
	parked   bool
	killed   chan struct{}
	killOnce sync.Once
	b        *memBackend
}

func (e *memExec) ID() string { return e.id }

func (e *memExec) Next(ctx context.Context) (sprites.Event, error) {
	if e.parked {
		select {
		case <-ctx.Done():
			return sprites.Event{}, ctx.Err()
		case <-e.killed:
			e.parked = false
			e.step = 2
			return sprites.Event{Exited: true, ExitCode: 137}, nil
		}
	}
	e.step++
	switch {
	case e.step == 1 && len(e.out) > 0:
		return sprites.Event{Stream: sprites.Stdout, Data: e.out}, nil
	case e.step <= 2:
		e.step = 2
		return sprites.Event{Exited: true}, nil
	}
	return sprites.Event{}, io.EOF
}

func (e *memExec) Offsets() sprites.Offsets {
	if e.step >= 1 {
		return sprites.Offsets{Stdout: int64(len(e.out))}
	}
	return sprites.Offsets{}
}

func (e *memExec) Close() error {
	if e.b != nil {
		e.b.mu.Lock()
		delete(e.b.execs, e.id)
		e.b.mu.Unlock()
	}
	return nil
}

// parked counts agent execs that are parked (started, not yet closed or
// killed).
func (b *memBackend) parked() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.execs)
}
