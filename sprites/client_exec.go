package sprites

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// stdinChunk is the largest stdin frame payload sent.
const stdinChunk = 32 << 10

// Exec starts a command over the exec WebSocket. It returns once the
// service has announced the session id (session_info) or sent the first
// output. The stream survives connection drops: it re-attaches and skips
// the bytes already received (the service replays the scrollback from byte
// 0), so each byte is delivered once.
func (c *Client) Exec(ctx context.Context, name string, req ExecRequest) (Exec, error) {
	if len(req.Argv) == 0 {
		return nil, errors.New("sprites: exec: empty argv")
	}
	q := url.Values{}
	for _, a := range req.Argv {
		q.Add("cmd", a)
	}
	q.Set("path", req.Argv[0])
	q.Set("dir", cmp.Or(req.Dir, DefaultHome))
	q.Set("stdin", fmt.Sprint(req.Stdin != nil))
	q.Set("max_run_after_disconnect", c.maxRunAfterDis.String())
	conn, err := c.dial(ctx, spritePath(name)+"/exec", q)
	if err != nil {
		return nil, err
	}
	s := c.newStream(name, "", Offsets{})
	// Stdin is written concurrently with reading, so a command that
	// answers before reading all its input cannot deadlock us.
	go s.writeStdin(conn, req.Stdin)
	go s.run(conn)
	select {
	case <-s.ready:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("sprites: exec %s: %w", name, ctx.Err())
	}
}

// Attach re-attaches to exec id (WSS /exec/{id}); output before from is
// skipped.
func (c *Client) Attach(ctx context.Context, name, execID string, from Offsets) (Exec, error) {
	if execID == "" {
		return nil, errors.New("sprites: attach: empty exec id")
	}
	conn, err := c.dial(ctx, spritePath(name)+"/exec/"+url.PathEscape(execID), nil)
	if err != nil {
		return nil, err
	}
	s := c.newStream(name, execID, from)
	go s.run(conn)
	return s, nil
}

// dial opens an exec WebSocket. A refused upgrade becomes an *Error.
func (c *Client) dial(ctx context.Context, path string, q url.Values) (*websocket.Conn, error) {
	u := c.url(path, q)
	u = "ws" + strings.TrimPrefix(u, "http") // http→ws, https→wss
	opts := &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.token}},
	}
	if c.http != nil && c.http.Timeout == 0 {
		opts.HTTPClient = c.http
	}
	conn, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != 0 {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
				resp.Body.Close()
			}
			e := parseErrorBody(resp.StatusCode, resp.Header, body)
			e.Op = "WS " + path
			return nil, e
		}
		return nil, fmt.Errorf("sprites: WS %s: %w", path, err)
	}
	conn.SetReadLimit(c.wsReadLimit)
	return conn, nil
}

type streamItem struct {
	ev  Event
	err error
}

// execStream implements Exec for the Client.
type execStream struct {
	c    *Client
	name string

	ctx    context.Context // lives until Close
	cancel context.CancelFunc

	id        atomic.Pointer[string]
	ready     chan struct{} // closed once id is known or output/exit/error arrived
	readyOnce sync.Once

	items chan streamItem // closed by run when it ends
	done  chan struct{}   // closed when run returns

	// Owned by run: bytes received per stream (delivered or queued).
	recv Offsets

	mu        sync.Mutex
	delivered Offsets
	finalErr  error // sticky error after items is drained
	exited    bool

	inRead atomic.Bool // the reader is blocked in Read (for keepalive)
}

func (c *Client) newStream(name, id string, from Offsets) *execStream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &execStream{
		c: c, name: name, ctx: ctx, cancel: cancel,
		ready: make(chan struct{}), items: make(chan streamItem, 16), done: make(chan struct{}),
		recv: from, delivered: from,
	}
	s.id.Store(&id)
	if id != "" {
		s.markReady()
	}
	return s
}

func (s *execStream) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// ID returns the session id announced by the service.
func (s *execStream) ID() string { return *s.id.Load() }

// Offsets returns the bytes returned by Next so far per stream.
func (s *execStream) Offsets() Offsets {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivered
}

// Next returns the next event; io.EOF after the exit.
func (s *execStream) Next(ctx context.Context) (Event, error) {
	s.mu.Lock()
	if s.exited {
		s.mu.Unlock()
		return Event{}, io.EOF
	}
	if s.finalErr != nil {
		err := s.finalErr
		s.mu.Unlock()
		return Event{}, err
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return Event{}, ctx.Err()
	case it, ok := <-s.items:
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case !ok:
			if s.finalErr == nil {
				s.finalErr = fmt.Errorf("sprites: exec %s: stream closed", s.ID())
			}
			return Event{}, s.finalErr
		case it.err != nil:
			s.finalErr = it.err
			return Event{}, it.err
		case it.ev.Exited:
			s.exited = true
		case it.ev.Stream == Stdout:
			s.delivered.Stdout += int64(len(it.ev.Data))
		case it.ev.Stream == Stderr:
			s.delivered.Stderr += int64(len(it.ev.Data))
		}
		return it.ev, nil
	}
}

// Close releases the connection; the command keeps running.
func (s *execStream) Close() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *execStream) writeStdin(conn *websocket.Conn, stdin []byte) {
	ctx := s.ctx
	for len(stdin) > 0 {
		n := min(len(stdin), stdinChunk)
		if err := conn.Write(ctx, websocket.MessageBinary, EncodeFrame(FrameStdin, stdin[:n])); err != nil {
			return // the reader sees the broken connection
		}
		stdin = stdin[n:]
	}
	_ = conn.Write(ctx, websocket.MessageBinary, []byte{FrameStdinEOF})
}

// emit queues an item for Next; false when the stream was closed.
func (s *execStream) emit(it streamItem) bool {
	select {
	case s.items <- it:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// errExited is returned by readConn after the exit event was queued.
var errExited = errors.New("exited")

// run reads connections until the exit, re-attaching after drops.
func (s *execStream) run(conn *websocket.Conn) {
	defer close(s.done)
	defer close(s.items)
	defer s.markReady()
	failures := 0
	for {
		progress, err := s.readConn(conn)
		if errors.Is(err, errExited) {
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		conn.CloseNow()
		if s.ctx.Err() != nil {
			return
		}
		var fe *FrameError
		if errors.As(err, &fe) {
			s.emit(streamItem{err: fmt.Errorf("sprites: exec %s on %s: %w", s.ID(), s.name, err)})
			return
		}
		if progress {
			failures = 0
		}
		id := s.ID()
		if st := websocket.CloseStatus(err); id == "" && st != -1 && st != websocket.StatusNormalClosure && st != websocket.StatusGoingAway {
			// The service refused the command (e.g. it could not start).
			s.emit(streamItem{err: fmt.Errorf("sprites: exec on %s: server closed the stream: %w", s.name, err)})
			return
		}
		if id == "" {
			s.emit(streamItem{err: fmt.Errorf("sprites: exec on %s: connection lost before the session id was known: %w: %w", s.name, ErrTransportLost, err)})
			return
		}
		s.c.logger.Debug("sprites: exec stream lost, re-attaching", "sprite", s.name, "exec", id, "err", err)
		conn = nil
		for conn == nil {
			failures++
			if failures > s.c.reattachTries {
				s.emit(streamItem{err: fmt.Errorf("sprites: exec %s on %s: %w: %w", id, s.name, ErrTransportLost, err)})
				return
			}
			delay := s.c.reattachDelay << min(failures-1, 6)
			if serr := s.c.sleep(s.ctx, min(delay, 5*time.Second)); serr != nil {
				return
			}
			c, derr := s.c.dial(s.ctx, spritePath(s.name)+"/exec/"+url.PathEscape(id), nil)
			if derr != nil {
				if s.ctx.Err() != nil {
					return
				}
				var apiErr *Error
				if errors.As(derr, &apiErr) && !apiErr.Temporary() {
					// 404 (record gone), 401…: no point in retrying.
					s.emit(streamItem{err: fmt.Errorf("sprites: exec %s on %s: %w: %w", id, s.name, ErrTransportLost, derr)})
					return
				}
				err = derr
				continue
			}
			conn = c
		}
	}
}

// readConn reads one connection until it ends. skip tracks replayed
// scrollback: bytes up to s.recv are dropped. progress reports whether new
// bytes (or the exit) arrived.
func (s *execStream) readConn(conn *websocket.Conn) (progress bool, err error) {
	connCtx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go s.keepalive(connCtx, conn)
	// Bytes seen on this connection per stream (the service replays from 0).
	var seen Offsets
	hint := 4 << 10
	for {
		s.inRead.Store(true)
		typ, msg, err := readMessage(connCtx, conn, &hint)
		s.inRead.Store(false)
		if err != nil {
			return progress, err
		}
		if typ == websocket.MessageText {
			m, err := ParseTextMessage(msg)
			if err != nil {
				return progress, err
			}
			switch {
			case m.Control:
			case m.Type == MessageSessionInfo:
				if s.ID() == "" && m.SessionID != "" {
					id := m.SessionID
					s.id.Store(&id)
				}
				s.markReady()
			case m.Type == MessageExit:
				s.markReady()
				if !s.emit(streamItem{ev: Event{Exited: true, ExitCode: m.ExitCode}}) {
					return true, s.ctx.Err()
				}
				return true, errExited
			}
			continue
		}
		f, err := DecodeFrame(msg)
		if err != nil {
			return progress, err
		}
		switch f.ID {
		case FrameStdout, FrameStderr:
			st := Stream(f.ID)
			cur, have := &seen.Stdout, &s.recv.Stdout
			if st == Stderr {
				cur, have = &seen.Stderr, &s.recv.Stderr
			}
			start := *cur
			*cur += int64(len(f.Data))
			if *cur <= *have {
				continue // replayed bytes already received
			}
			data := f.Data
			if start < *have {
				data = data[*have-start:]
			}
			*have = *cur
			progress = true
			s.markReady()
			if !s.emit(streamItem{ev: Event{Stream: st, Data: data}}) {
				return progress, s.ctx.Err()
			}
		case FrameExit:
			s.markReady()
			if !s.emit(streamItem{ev: Event{Exited: true, ExitCode: f.ExitCode()}}) {
				return true, s.ctx.Err()
			}
			return true, errExited
		default:
			// Client-direction frames from the server are ignored.
		}
	}
}

// keepalive pings the connection and closes it when a pong does not come
// in time. Pings need a concurrent reader, so a tick is skipped while the
// reader waits on a slow consumer.
func (s *execStream) keepalive(ctx context.Context, conn *websocket.Conn) {
	if s.c.pingInterval <= 0 {
		return
	}
	t := time.NewTicker(s.c.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.inRead.Load() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.c.pongTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil && s.inRead.Load() {
			s.c.logger.Warn("sprites: exec connection unresponsive, dropping it", "sprite", s.name, "exec", s.ID(), "err", err)
			conn.CloseNow()
			return
		}
	}
}

// readMessage reads one message into a buffer sized from the previous
// message (conn.Read grows from 512 bytes, which costs a lot for 64 KiB
// frames). The buffer is not reused: events own their data.
func readMessage(ctx context.Context, conn *websocket.Conn, hint *int) (websocket.MessageType, []byte, error) {
	typ, r, err := conn.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	buf := make([]byte, 0, *hint+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, nil, err
		}
	}
	*hint = min(max(len(buf), 4<<10), 1<<20)
	return typ, buf, nil
}
