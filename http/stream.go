package http

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/persistence"
)

// replayPage is how many log rows a stream reads per query.
const replayPage = 500

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
func (s *Server) stream(c *fiber.Ctx, p *principal) error {
	id := utils.CopyString(c.Params("id"))
	ctx := s.ctx
	sess, err := s.db.SessionGet(c.UserContext(), p.UserID, id)
	if err != nil {
		return s.sessionNotFound(err)
	}
	cursor, err := parseCursor(c)
	if err != nil {
		return err
	}
	provider := sess.Provider
	if provider == "" {
		provider = sess.Runtime
	}
	st := &streamState{srv: s, sessionID: id, lastID: cursor, prevTurn: turnUnset}
	// Attach to the actor's fan-out before the headers go out, so nothing
	// made durable after the 200 can be missed.
	if sess.Active() {
		st.subscribe(ctx)
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	c.Status(fiber.StatusOK)
	s.metrics.sseClients.Inc()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.metrics.sseClients.Dec()
		defer st.unsubscribe()
		start := sse.Event{Type: sse.TypeStart, Provider: provider, SessionID: id}
		st.buf = sse.AppendEvent(st.buf[:0], &start)
		if st.flush(w) != nil {
			return
		}
		st.run(ctx, w)
	})
	return nil
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
	sub       *actors.Subscription
	live      bool
	lastRow   time.Time
}

func (st *streamState) subscribe(ctx context.Context) {
	if st.srv.deps.Sessions == nil {
		return
	}
	sub, live, _, err := st.srv.deps.Sessions.Subscribe(ctx, st.sessionID)
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

func (st *streamState) flush(w *bufio.Writer) error {
	if len(st.buf) > 0 {
		if _, err := w.Write(st.buf); err != nil {
			return err
		}
		st.buf = st.buf[:0]
	}
	return w.Flush()
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
func (st *streamState) catchUp(ctx context.Context, w *bufio.Writer) (int, error) {
	total := 0
	for {
		rows, err := st.srv.db.EventsAfter(ctx, st.sessionID, st.lastID, replayPage)
		if err != nil {
			return total, err
		}
		for i := range rows {
			st.add(&rows[i])
		}
		total += len(rows)
		if len(rows) > 0 {
			if err := st.flush(w); err != nil {
				return total, err
			}
		}
		if len(rows) < replayPage {
			return total, nil
		}
	}
}

// terminal ends the stream when the session's work is over: it reads the
// status first, then drains the log, so every event committed before the
// terminal status (D7: in the same transaction or earlier) is sent before
// the terminal event. It reports whether it ended the stream.
func (st *streamState) terminal(ctx context.Context, w *bufio.Writer) (bool, error) {
	status, code, err := st.srv.db.SessionStatus(ctx, st.sessionID)
	if err != nil {
		return false, err
	}
	if _, err := st.catchUp(ctx, w); err != nil {
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
	return true, st.flush(w)
}

func (st *streamState) run(ctx context.Context, w *bufio.Writer) {
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
		if _, err := st.catchUp(ctx, w); err != nil {
			return
		}
		if !st.live {
			done, err := st.terminal(ctx, w)
			if err != nil || done {
				return
			}
		}
		// Live streams are pushed to; only a stream without a live
		// subscription polls the log (and retries subscribing).
		var liveC chan []*persistence.Event
		if st.live {
			liveC = st.sub.C
			poll.Stop()
		} else {
			poll.Reset(cfg.SSEPoll)
		}
	wait:
		for {
			select {
			case batch, ok := <-liveC:
				if !ok {
					// Lagged: catch up from the log and subscribe again.
					// Finished: catch up, then end or follow the next turn.
					lagged := st.sub.Lagged()
					st.sub, st.live = nil, false
					if _, err := st.catchUp(ctx, w); err != nil {
						return
					}
					if !lagged {
						done, err := st.terminal(ctx, w)
						if err != nil || done {
							return
						}
					}
					st.subscribe(ctx)
					break wait
				}
				for _, e := range batch {
					st.add(e)
				}
				if st.flush(w) != nil {
					return
				}
				st.resetStale(stale)
			case <-poll.C:
				if st.live {
					continue
				}
				n, err := st.catchUp(ctx, w)
				if err != nil {
					return
				}
				if n > 0 {
					st.resetStale(stale)
				}
				if done, err := st.terminal(ctx, w); err != nil || done {
					return
				}
				if st.srv.deps.Sessions != nil {
					st.subscribe(ctx)
					if st.live {
						break wait
					}
				}
			case <-heartbeat.C:
				st.buf = sse.AppendHeartbeat(st.buf)
				if st.flush(w) != nil {
					return // the client is gone
				}
			case <-stale.C:
				if time.Since(st.lastRow) < cfg.SSEStale {
					st.resetStale(stale)
					continue
				}
				ev := sse.Stale(st.lastID, cfg.SSEStale)
				st.buf = sse.AppendEvent(st.buf, &ev)
				_ = st.flush(w)
				return
			case <-st.srv.done:
				return
			}
		}
	}
}

func (st *streamState) resetStale(t *time.Timer) {
	t.Reset(st.srv.cfg.SSEStale - time.Since(st.lastRow))
}
