package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/persistence"
)

// replayPage is how many log rows a stream reads per query, and
// replayPageBytes how much event data at most: a page is held in memory
// while it is encoded and written.
const (
	replayPage      = 500
	replayPageBytes = 1 << 20
)

// bufKeep is the largest encode buffer a stream keeps between writes: a
// bigger one (after a large replay page or batch) is dropped, so an idle
// stream holds little.
const bufKeep = 64 << 10

// parseCursor reads the stream cursor: Last-Event-ID wins over ?since=;
// negative values clamp to 0; anything else that is not an integer is 400.
func parseCursor(c *fiber.Ctx) (int64, error) {
	raw := c.Get("Last-Event-ID")
	if raw == "" {
		raw = c.Query("since")
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, errSinceMustBeInteger
	}
	return max(n, 0), nil
}

// stream serves GET /sessions/{id}/stream (aod-api.md §5): the start event,
// a replay of every event after the cursor from the log, then live events
// pushed by the session actor the moment they are durable, heartbeats, and
// the terminal event when the session's work ends.
//
// The response is written on the hijacked connection by one goroutine,
// chunk by chunk, each write under SSEWriteTimeout: a client that stops
// reading is disconnected and its subscription released, and the memory it
// can pin is bounded by its subscription's budget and one replay page.
func (s *Server) stream(c *fiber.Ctx, p *principal) error {
	id := utils.CopyString(c.Params("id"))
	st := &streamState{srv: s, sessionID: id, prevTurn: turnUnset}
	var provider string
	// A session whose actor runs its work here is served without reading
	// the database: the actor vouches for the owner and hands over the
	// events after the cursor it still holds. Otherwise (or with a bad
	// cursor, whose 400 must not hide a 404) the session is looked up.
	cursor, cerr := parseCursor(c)
	if cerr == nil && s.deps.Sessions != nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.SSESubscribeTimeout)
		sub, info, ok := s.deps.Sessions.Attach(ctx, id, p.UserID, cursor)
		cancel()
		if ok {
			st.sub, st.live, st.covered, provider = sub, true, info.Covered, info.Provider
		}
	}
	if !st.live {
		sess, err := s.db.SessionGet(c.UserContext(), p.UserID, id)
		if err != nil {
			return s.sessionNotFound(err)
		}
		if cerr != nil {
			return cerr
		}
		provider = sess.Provider
		if provider == "" {
			provider = sess.Runtime
		}
		// Attach to the actor's fan-out before the headers go out, so
		// nothing made durable after the 200 can be missed.
		if sess.Active() {
			st.subscribe()
		}
	}
	st.lastID = cursor
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	c.Status(fiber.StatusOK)
	fc := c.Context()
	fc.Response.Header.SetContentLength(-1) // Transfer-Encoding: chunked
	if !fc.Request.Header.IsHTTP11() {
		// The connection ends with the stream (as fasthttp's own stream
		// writer answers HTTP/1.0).
		fc.Response.Header.SetConnectionClose()
	}
	fc.HijackSetNoResponse(true)
	fc.Hijack(func(conn net.Conn) {
		raw := rawConn(conn)
		keep := false
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in stream", slog.String("session", id),
					slog.String("panic", fmt.Sprint(r)), slog.String("stack", string(debug.Stack())))
				keep = false
			}
			if keep {
				s.keepAlive(conn, raw)
			} else {
				_ = raw.Close()
			}
		}()
		if !s.trackStream(raw) {
			st.unsubscribe()
			return
		}
		s.metrics.sseClients.Inc()
		defer func() {
			st.unsubscribe()
			s.metrics.sseClients.Dec()
			s.untrackStream(raw)
		}()
		// The head is rendered now: fasthttp has applied its connection
		// rules (Connection: close) to the response header by this point.
		st.w = &chunkedConn{conn: raw, timeout: s.cfg.SSEWriteTimeout, done: s.done,
			head: append([]byte(nil), fc.Response.Header.Header()...)}
		keepConn := !fc.Response.Header.ConnectionClose()
		start := sse.Event{Type: sse.TypeStart, Provider: provider, SessionID: id}
		st.buf = sse.AppendEvent(st.buf[:0], &start)
		if st.flush() != nil {
			return
		}
		if st.run(s.ctx) && st.w.end() == nil {
			keep = keepConn
		}
	})
	return nil
}

// keepAlive hands a connection whose stream ended cleanly back to the HTTP
// server for its next request (HTTP/1.1 keep-alive, as with fasthttp's own
// stream writer). Bytes the client already sent after the stream request
// sit in the hijacked connection's reader: they are drained first and
// replayed in front of the socket.
func (s *Server) keepAlive(conn, raw net.Conn) {
	select {
	case <-s.done:
		_ = raw.Close()
		return
	default:
	}
	if raw.SetWriteDeadline(time.Time{}) != nil || raw.SetReadDeadline(time.Now()) != nil {
		_ = raw.Close()
		return
	}
	var pending []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		pending = append(pending, buf[:n]...)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				_ = raw.Close()
				return
			}
			break
		}
		if len(pending) > 64<<10 {
			_ = raw.Close() // a pipelining flood: not worth keeping
			return
		}
	}
	if raw.SetReadDeadline(time.Time{}) != nil {
		_ = raw.Close()
		return
	}
	var next net.Conn = raw
	if len(pending) > 0 {
		next = &prefixConn{Conn: raw, prefix: pending}
	}
	kc := &keptConn{Conn: next}
	if len(pending) > 0 {
		kc.active.Store(true)
	}
	if !s.trackKept(kc) {
		_ = raw.Close()
		return
	}
	defer s.untrackKept(kc)
	_ = s.app.Server().ServeConn(kc) // closes kc when done
}

// keptConn is a connection handed back for keep-alive; active is set once
// its next request has started to arrive (from then on fasthttp tracks its
// state itself).
type keptConn struct {
	net.Conn
	active atomic.Bool
}

func (c *keptConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.active.Store(true)
	}
	return n, err
}

// trackKept registers a kept connection; it refuses once the server is
// shutting down.
func (s *Server) trackKept(c *keptConn) bool {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	select {
	case <-s.done:
		return false
	default:
	}
	s.keptConns[c] = struct{}{}
	return true
}

func (s *Server) untrackKept(c *keptConn) {
	s.streamMu.Lock()
	delete(s.keptConns, c)
	s.streamMu.Unlock()
}

// closeKeptIdle closes the kept connections that are still waiting for
// their next request (shutdown); those serving one finish it.
func (s *Server) closeKeptIdle() {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	for c := range s.keptConns {
		if !c.active.Load() {
			_ = c.Close()
		}
	}
}

// prefixConn reads prefix before the connection itself.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// trackStream registers a stream's connection (Shutdown waits for the
// stream and cuts its pending writes); it refuses new streams once the
// server is shutting down.
func (s *Server) trackStream(c net.Conn) bool {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	select {
	case <-s.done:
		return false
	default:
	}
	s.streams.Add(1)
	s.streamConns[c] = struct{}{}
	return true
}

// untrackStream forgets a stream that ended.
func (s *Server) untrackStream(c net.Conn) {
	s.streamMu.Lock()
	delete(s.streamConns, c)
	s.streamMu.Unlock()
	s.streams.Done()
}

// cutStreams unblocks every stream's pending write (shutdown).
func (s *Server) cutStreams() {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	for c := range s.streamConns {
		_ = c.SetWriteDeadline(time.Now())
	}
}

// turnUnset marks "no output yet in this connection": the first output
// always gets a turn_start.
const turnUnset = int64(-1 << 62)

type streamState struct {
	srv       *Server
	sessionID string
	lastID    int64
	prevTurn  int64
	buf       []byte
	w         *chunkedConn
	sub       Subscription
	batches   [][]*persistence.Event // reused by Take
	live      bool
	covered   bool // the subscription holds everything after lastID: skip the first replay
	lastRow   time.Time
}

// subscribe attaches to the session's actor, waiting at most
// SSESubscribeTimeout for its answer: a session actor that cannot answer in
// time (e.g. still loading from a slow database) leaves the stream served
// from the log, which re-tries subscribing at every poll.
func (st *streamState) subscribe() {
	if st.srv.deps.Sessions == nil {
		return
	}
	ctx, cancel := context.WithTimeout(st.srv.ctx, st.srv.cfg.SSESubscribeTimeout)
	defer cancel()
	sub, live, err := st.srv.deps.Sessions.Subscribe(ctx, st.sessionID)
	if err != nil || !live {
		st.sub, st.live = nil, false
		return
	}
	st.sub, st.live = sub, true
}

func (st *streamState) unsubscribe() {
	if st.sub != nil {
		st.srv.deps.Sessions.Unsubscribe(st.sub)
		st.sub = nil
	}
}

// flush writes what is encoded as one chunk.
func (st *streamState) flush() error {
	if len(st.buf) == 0 {
		return nil
	}
	err := st.w.chunk(st.buf)
	if cap(st.buf) > bufKeep {
		st.buf = nil
	} else {
		st.buf = st.buf[:0]
	}
	return err
}

// add encodes one log row (with its turn_start when the turn changes in
// this connection); rows at or below the cursor are skipped (dedupe at the
// replay → live hand-over).
func (st *streamState) add(e *persistence.Event) {
	if e.ID <= st.lastID {
		return
	}
	st.lastID = e.ID
	st.lastRow = time.Now()
	switch e.Kind {
	case persistence.KindStage:
		ev := sse.Event{Type: sse.TypeStage, ID: e.ID, Stage: e.Stage, State: e.State, DurationMS: e.DurationMS}
		if e.State == sse.StageFailed {
			ev.Message = e.Data
		}
		st.buf = sse.AppendEvent(st.buf, &ev)
	default:
		var turn *int64
		cur := int64(-1)
		if e.Turn != nil {
			t := int64(*e.Turn)
			turn, cur = &t, t
		}
		if cur != st.prevTurn {
			ts := sse.Event{Type: sse.TypeTurnStart, ID: e.ID, Turn: turn}
			st.buf = sse.AppendEvent(st.buf, &ts)
			st.prevTurn = cur
		}
		ev := sse.Event{Type: sse.TypeOutput, ID: e.ID, Stream: e.Stream, Data: e.Data, Turn: turn}
		st.buf = sse.AppendEvent(st.buf, &ev)
	}
}

// catchUp replays the log after lastID until it is exhausted.
// Pages are bounded in rows and in bytes.
func (st *streamState) catchUp(ctx context.Context) (int, error) {
	total := 0
	for {
		rows, more, err := st.srv.db.EventsPage(ctx, st.sessionID, st.lastID, replayPage, replayPageBytes)
		if err != nil {
			return total, err
		}
		for i := range rows {
			st.add(&rows[i])
		}
		total += len(rows)
		if len(rows) > 0 {
			if err := st.flush(); err != nil {
				return total, err
			}
		}
		if !more {
			return total, nil
		}
	}
}

// terminal ends the stream when the session's work is over: it reads the
// status first, then drains the log, so every event committed before the
// terminal status (D7: in the same transaction or earlier) is sent before
// the terminal event. It reports whether it ended the stream.
func (st *streamState) terminal(ctx context.Context) (bool, error) {
	status, code, err := st.srv.db.SessionStatus(ctx, st.sessionID)
	if err != nil {
		return false, err
	}
	if _, err := st.catchUp(ctx); err != nil {
		return false, err
	}
	switch status {
	case persistence.StatusCompleted, persistence.StatusFailed, persistence.StatusTerminated:
	default:
		return false, nil
	}
	var exit *int64
	if code != nil {
		c := int64(*code)
		exit = &c
	}
	ev := sse.Terminal(status, exit, st.lastID)
	st.buf = sse.AppendEvent(st.buf, &ev)
	return true, st.flush()
}

// run streams until the session's work ends, the client is gone or the
// server stops. It reports whether the body ended normally (terminal or
// stale event sent), so the last chunk may follow.
func (st *streamState) run(ctx context.Context) bool {
	cfg := st.srv.cfg
	heartbeat := time.NewTicker(cfg.SSEHeartbeat)
	defer heartbeat.Stop()
	st.lastRow = time.Now()
	stale := time.NewTimer(cfg.SSEStale)
	defer stale.Stop()
	poll := time.NewTicker(cfg.SSEPoll)
	defer poll.Stop()
	for {
		// Replay up to the live edge, then check for the end.
		if st.covered {
			st.covered = false
		} else if _, err := st.catchUp(ctx); err != nil {
			return false
		}
		if !st.live {
			done, err := st.terminal(ctx)
			if err != nil || done {
				return err == nil
			}
		}
		// Live streams are pushed to; only a stream without a live
		// subscription polls the log (and retries subscribing).
		var liveC <-chan struct{}
		if st.live {
			liveC = st.sub.C()
			poll.Stop()
		} else {
			poll.Reset(cfg.SSEPoll)
		}
	wait:
		for {
			select {
			case <-liveC:
				batches, open := st.sub.Take(st.batches)
				for _, b := range batches {
					for _, e := range b {
						st.add(e)
					}
				}
				// Encoded: the events need not stay reachable while a
				// slow client takes the bytes.
				clear(batches)
				st.batches = batches[:0]
				if len(st.buf) > 0 {
					if st.flush() != nil {
						return false
					}
					st.resetStale(stale)
				}
				if open {
					continue
				}
				// Lagged: catch up from the log and subscribe again.
				// Finished: catch up, then end or follow the next turn.
				lagged := st.sub.Lagged()
				st.sub, st.live = nil, false
				if _, err := st.catchUp(ctx); err != nil {
					return false
				}
				if !lagged {
					done, err := st.terminal(ctx)
					if err != nil || done {
						return err == nil
					}
				}
				st.subscribe()
				break wait
			case <-poll.C:
				if st.live {
					continue
				}
				n, err := st.catchUp(ctx)
				if err != nil {
					return false
				}
				if n > 0 {
					st.resetStale(stale)
				}
				if done, err := st.terminal(ctx); err != nil || done {
					return err == nil
				}
				if st.srv.deps.Sessions != nil {
					st.subscribe()
					if st.live {
						break wait
					}
				}
			case <-heartbeat.C:
				st.buf = sse.AppendHeartbeat(st.buf)
				if st.flush() != nil {
					return false // the client is gone
				}
			case <-stale.C:
				if time.Since(st.lastRow) < cfg.SSEStale {
					st.resetStale(stale)
					continue
				}
				ev := sse.Stale(st.lastID, cfg.SSEStale)
				st.buf = sse.AppendEvent(st.buf, &ev)
				return st.flush() == nil
			case <-st.srv.done:
				return false
			}
		}
	}
}

func (st *streamState) resetStale(t *time.Timer) {
	t.Reset(st.srv.cfg.SSEStale - time.Since(st.lastRow))
}
