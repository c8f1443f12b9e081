package runner

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// dirNotifier wakes watchers when something changes in a directory. One
// inotify instance serves the whole process (the per-user instance limit
// is small, often 128); it is opened on the first subscription and closed
// when the last one ends.
type dirNotifier struct {
	mu    sync.Mutex
	f     *os.File // the inotify fd; nil while nobody subscribes
	byWd  map[int32]*dirWatch
	byDir map[string]*dirWatch
	subs  int // subscriptions in all dirs
}

// dirWatch is one watched directory.
type dirWatch struct {
	wd   int32
	dir  string
	subs map[chan struct{}]struct{}
	gone bool // the kernel dropped the watch (directory removed)
}

// notifier is the process-wide dirNotifier.
var notifier = &dirNotifier{}

// notifyMask is what wakes a watcher: writes to the spool files and the
// exit file appearing.
const notifyMask = unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF

// subscribe returns a channel that receives a value (coalesced) after each
// change in dir, and a function that ends the subscription.
func (n *dirNotifier) subscribe(dir string) (<-chan struct{}, func(), error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f == nil {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return nil, nil, fmt.Errorf("inotify: %w", err)
		}
		n.f = os.NewFile(uintptr(fd), "inotify")
		n.byWd = map[int32]*dirWatch{}
		n.byDir = map[string]*dirWatch{}
		go n.read(n.f)
	}
	w := n.byDir[dir]
	if w == nil {
		wd, err := unix.InotifyAddWatch(int(n.f.Fd()), dir, notifyMask)
		if err != nil {
			n.closeIfIdle()
			return nil, nil, fmt.Errorf("inotify watch %s: %w", dir, err)
		}
		w = &dirWatch{wd: int32(wd), dir: dir, subs: map[chan struct{}]struct{}{}}
		n.byWd[w.wd] = w
		n.byDir[dir] = w
	}
	ch := make(chan struct{}, 1)
	w.subs[ch] = struct{}{}
	n.subs++
	var once sync.Once
	return ch, func() { once.Do(func() { n.unsubscribe(w, ch) }) }, nil
}

func (n *dirNotifier) unsubscribe(w *dirWatch, ch chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(w.subs, ch)
	n.subs--
	if len(w.subs) == 0 && !w.gone {
		_, _ = unix.InotifyRmWatch(int(n.f.Fd()), uint32(w.wd))
		delete(n.byWd, w.wd)
		delete(n.byDir, w.dir)
	}
	n.closeIfIdle()
}

// closeIfIdle closes the inotify instance when nobody subscribes; its
// reader then ends. n.mu is held.
func (n *dirNotifier) closeIfIdle() {
	if n.subs == 0 && n.f != nil {
		_ = n.f.Close()
		n.f = nil
		n.byWd = nil
		n.byDir = nil
	}
}

// read dispatches the events of f until it is closed.
func (n *dirNotifier) read(f *os.File) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		k, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				// Unexpected; watchers fall back to polling.
				n.wakeAll(f)
			}
			return
		}
		n.dispatch(f, buf[:k])
	}
}

func (n *dirNotifier) dispatch(f *os.File, events []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f != f {
		return // closed and maybe reopened since
	}
	for len(events) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(events[0:4]))
		mask := binary.NativeEndian.Uint32(events[4:8])
		nameLen := binary.NativeEndian.Uint32(events[12:16])
		events = events[min(len(events), unix.SizeofInotifyEvent+int(nameLen)):]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			n.wakeAllLocked()
			continue
		}
		w := n.byWd[wd]
		if w == nil {
			continue
		}
		for ch := range w.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		if mask&unix.IN_IGNORED != 0 {
			w.gone = true
			delete(n.byWd, w.wd)
			delete(n.byDir, w.dir)
		}
	}
}

func (n *dirNotifier) wakeAll(f *os.File) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f == f {
		n.wakeAllLocked()
	}
}

func (n *dirNotifier) wakeAllLocked() {
	for _, w := range n.byWd {
		for ch := range w.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// dirWaker is one watcher's view of a directory: inotify wake-ups with a
// fallback poll.
type dirWaker struct {
	ch    <-chan struct{} // nil when inotify is unavailable
	stop  func()
	timer *time.Timer
	poll  time.Duration
}

func newDirWaker(dir string, r *Runner) *dirWaker {
	ch, stop, err := notifier.subscribe(dir)
	if err != nil {
		r.logger.Warn("runner: inotify unavailable, polling exec output", "dir", dir, "err", err)
		return &dirWaker{stop: func() {}, timer: time.NewTimer(time.Hour), poll: 10 * time.Millisecond}
	}
	return &dirWaker{ch: ch, stop: stop, timer: time.NewTimer(time.Hour), poll: fallbackPoll}
}

// wait blocks until the directory changes, the fallback poll interval
// passes, or ctx ends.
func (w *dirWaker) wait(ctx context.Context) error {
	w.timer.Reset(w.poll)
	select {
	case <-w.ch:
		return nil
	case <-w.timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *dirWaker) close() {
	w.timer.Stop()
	w.stop()
}
