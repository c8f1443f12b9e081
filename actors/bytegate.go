package actors

import (
	"context"
	"sync"
)

// byteGate bounds the bytes in flight between producers and a consumer:
// acquire blocks while admitting n more bytes would exceed the limit. An
// item larger than the whole limit is admitted when nothing else is in
// flight, so it cannot wait forever.
type byteGate struct {
	mu    sync.Mutex
	used  int64
	limit int64
	wake  chan struct{} // closed and replaced on every release
}

func newByteGate(limit int64) *byteGate {
	return &byteGate{limit: limit, wake: make(chan struct{})}
}

// acquire admits n bytes, or returns ctx's error, or errWriterStopped once
// stopped is closed.
func (g *byteGate) acquire(ctx context.Context, stopped <-chan struct{}, n int64) error {
	for {
		g.mu.Lock()
		if g.used == 0 || g.used+n <= g.limit {
			g.used += n
			g.mu.Unlock()
			return nil
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-stopped:
			return errWriterStopped
		}
	}
}

// release returns n bytes and wakes the waiters.
func (g *byteGate) release(n int64) {
	if n == 0 {
		return
	}
	g.mu.Lock()
	g.used -= n
	close(g.wake)
	g.wake = make(chan struct{})
	g.mu.Unlock()
}
