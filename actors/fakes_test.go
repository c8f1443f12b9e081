package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/sprites"
)

// fakeBackend is a sprites.Backend whose agent processes the test drives:
// every exec with stdin (a turn's agent) becomes a fakeProc that emits what
// the test writes to it; execs without stdin (provisioning) exit 0 at once.
// A process keeps its whole output, so Attach re-reads it from any offsets,
// like Sprites and the local backend do.
type fakeBackend struct {
	mu     sync.Mutex
	procs  map[string]*fakeProc
	nextID atomic.Int64
	// started receives each agent process as it starts (buffered).
	started chan *fakeProc
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{procs: map[string]*fakeProc{}, started: make(chan *fakeProc, 64)}
}

var _ sprites.Backend = (*fakeBackend)(nil)

func (b *fakeBackend) Check(context.Context) error { return nil }
func (b *fakeBackend) Create(_ context.Context, name string) (*sprites.Info, error) {
	return &sprites.Info{ID: name, Name: name, Status: "running"}, nil
}
func (b *fakeBackend) Get(_ context.Context, name string) (*sprites.Info, error) {
	return &sprites.Info{ID: name, Name: name, Status: "running"}, nil
}
func (b *fakeBackend) Delete(context.Context, string) error { return nil }
func (b *fakeBackend) WriteFile(context.Context, string, string, []byte, fs.FileMode) error {
	return nil
}
func (b *fakeBackend) Chmod(context.Context, string, string, fs.FileMode) error { return nil }
func (b *fakeBackend) SetNetworkPolicy(context.Context, string, sprites.NetworkPolicy) error {
	return nil
}

func (b *fakeBackend) Exec(_ context.Context, _ string, req sprites.ExecRequest) (sprites.Exec, error) {
	p := &fakeProc{id: fmt.Sprintf("exec-%d", b.nextID.Add(1)), changed: make(chan struct{})}
	if len(req.Stdin) == 0 {
		p.exit(0)
	} else {
		p.stdin = string(req.Stdin)
		b.started <- p
	}
	b.mu.Lock()
	b.procs[p.id] = p
	b.mu.Unlock()
	return &fakeExec{p: p}, nil
}

func (b *fakeBackend) Attach(_ context.Context, _ string, execID string, from sprites.Offsets) (sprites.Exec, error) {
	b.mu.Lock()
	p := b.procs[execID]
	b.mu.Unlock()
	if p == nil {
		return nil, sprites.ErrNotFound
	}
	p.attaches.Add(1)
	return &fakeExec{p: p, skip: [3]int64{sprites.Stdout: from.Stdout, sprites.Stderr: from.Stderr}}, nil
}

func (b *fakeBackend) Kill(_ context.Context, _ string, execID, _ string) error {
	b.mu.Lock()
	p := b.procs[execID]
	b.mu.Unlock()
	if p != nil {
		p.exit(137)
	}
	return nil
}

// fakeProc is one agent process: an append-only list of events.
type fakeProc struct {
	id       string
	stdin    string
	attaches atomic.Int64

	mu      sync.Mutex
	events  []sprites.Event
	exited  bool
	changed chan struct{} // closed and replaced on every append
}

// write appends output (ignored once exited).
func (p *fakeProc) write(st sprites.Stream, data string) {
	p.append(sprites.Event{Stream: st, Data: []byte(data)})
}

func (p *fakeProc) exit(code int) { p.append(sprites.Event{Exited: true, ExitCode: code}) }

func (p *fakeProc) append(ev sprites.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	p.exited = ev.Exited
	p.events = append(p.events, ev)
	close(p.changed)
	p.changed = make(chan struct{})
}

// fakeExec reads a fakeProc from its start, skipping the first skip bytes
// of each stream.
type fakeExec struct {
	p    *fakeProc
	i    int
	skip [3]int64
	got  [3]int64
}

func (e *fakeExec) ID() string { return e.p.id }

func (e *fakeExec) Next(ctx context.Context) (sprites.Event, error) {
	for {
		e.p.mu.Lock()
		if e.i < len(e.p.events) {
			ev := e.p.events[e.i]
			e.i++
			e.p.mu.Unlock()
			if ev.Exited {
				return ev, nil
			}
			data := ev.Data
			if s := e.skip[ev.Stream]; s > 0 {
				n := min(s, int64(len(data)))
				e.skip[ev.Stream] -= n
				data = data[n:]
			}
			if len(data) == 0 {
				continue
			}
			e.got[ev.Stream] += int64(len(data))
			return sprites.Event{Stream: ev.Stream, Data: data}, nil
		}
		if e.i > 0 && e.i == len(e.p.events) && e.p.exited {
			e.p.mu.Unlock()
			return sprites.Event{}, io.EOF
		}
		ch := e.p.changed
		e.p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return sprites.Event{}, ctx.Err()
		}
	}
}

func (e *fakeExec) Offsets() sprites.Offsets {
	return sprites.Offsets{Stdout: e.got[sprites.Stdout], Stderr: e.got[sprites.Stderr]}
}
func (e *fakeExec) Close() error { return nil }

// faultyStore wraps a Store; logAppend, when set, runs before each
// LogAppend and may fail it.
type faultyStore struct {
	Store
	mu         sync.Mutex
	logAppend  func(ctx context.Context, events []*persistence.Event) error
	sessionGet func(ctx context.Context) error
}

func (s *faultyStore) setSessionGet(fn func(ctx context.Context) error) {
	s.mu.Lock()
	s.sessionGet = fn
	s.mu.Unlock()
}

func (s *faultyStore) SessionGet(ctx context.Context, userID int64, id string) (*persistence.Session, error) {
	s.mu.Lock()
	fn := s.sessionGet
	s.mu.Unlock()
	if fn != nil {
		if err := fn(ctx); err != nil {
			return nil, err
		}
	}
	return s.Store.SessionGet(ctx, userID, id)
}

func (s *faultyStore) setLogAppend(fn func(ctx context.Context, events []*persistence.Event) error) {
	s.mu.Lock()
	s.logAppend = fn
	s.mu.Unlock()
}

func (s *faultyStore) LogAppend(ctx context.Context, events []*persistence.Event, updates ...persistence.Update) error {
	s.mu.Lock()
	fn := s.logAppend
	s.mu.Unlock()
	if fn != nil {
		if err := fn(ctx, events); err != nil {
			return err
		}
	}
	return s.Store.LogAppend(ctx, events, updates...)
}

var errInjected = errors.New("injected: connection refused")
