package app

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/spritestest"
)

// streamResult is what a live reader saw: the ids of the id-bearing events
// before the terminal one, and the terminal event's type.
type streamResult struct {
	ids      []int64
	terminal string
	err      error
}

// follow opens the session's stream after cursor and reads it in a
// goroutine until its terminal event (or ctx ends). Errors are reported in
// the result, never asserted off the test goroutine.
func (n *node) follow(ctx context.Context, id string, cursor int64) <-chan streamResult {
	n.t.Helper()
	resp, err := n.openStream(ctx, id, cursor)
	require.NoError(n.t, err)
	out := make(chan streamResult, 1)
	go func() {
		defer resp.Body.Close()
		out <- readStream(bufio.NewReader(resp.Body))
	}()
	return out
}

// openStream opens the session's stream after cursor (safe off the test
// goroutine: it asserts nothing).
func (n *node) openStream(ctx context.Context, id string, cursor int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+id+"/stream", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.key)
	if cursor > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(cursor, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, fmt.Errorf("stream answered %d", resp.StatusCode)
	}
	return resp, nil
}

// streamAll reads the session's whole stream once (off the test goroutine).
func (n *node) streamAll(ctx context.Context, id string) streamResult {
	resp, err := n.openStream(ctx, id, 0)
	if err != nil {
		return streamResult{err: err}
	}
	defer resp.Body.Close()
	return readStream(bufio.NewReader(resp.Body))
}

func readStream(r *bufio.Reader) streamResult {
	var res streamResult
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			res.err = fmt.Errorf("stream ended without a terminal event: %w", err)
			return res
		}
		if f.Comment != "" || f.Data == "" {
			continue
		}
		d, err := sse.DecodeData(f)
		if err != nil {
			res.err = err
			return res
		}
		switch typ, _ := d["type"].(string); typ {
		case "exit", "error", "terminated", "stale":
			res.terminal = typ
			return res
		}
		if f.ID == "" {
			continue // start, turn_start
		}
		id, err := strconv.ParseInt(f.ID, 10, 64)
		if err != nil {
			res.err = err
			return res
		}
		res.ids = append(res.ids, id)
	}
}

// logIDs returns the ids of every logged event of the session.
func (n *node) logIDs(id string) []int64 {
	n.t.Helper()
	rows, err := n.app.DB().EventsAfter(context.Background(), id, 0, 10_000_000)
	require.NoError(n.t, err)
	ids := make([]int64, len(rows))
	for i, e := range rows {
		ids[i] = e.ID
	}
	return ids
}

// TestTerminateDuringOutputFlood (issue 9 defect 1): terminate while the
// turn waits for room in a full writer queue must still end the turn with
// an outcome: every live stream ends with terminated at once and the
// session's actor retires. (Before the fix the stream got "stale" only
// after AOD_SSE_STALE, 600 s, and the actor never retired.) The issue's
// bound is 2 s; it holds in isolated runs, and endBound gives a starved
// CI machine (the whole package in parallel on 2 cores) some slack.
func TestTerminateDuringOutputFlood(t *testing.T) {
	endBound := 2 * time.Second
	if os.Getenv("CI") != "" {
		endBound = 5 * time.Second
	}
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.Postgres, backend: backendLocal, actors: actors.Config{WriterQueue: 1}})
	agent := n.agent(nil)
	for rep := range 20 {
		id := n.session(agent, "bytes:64M", "timeout", 600)
		waitOutput(t, n, id, "xxxxxxxx")
		last, err := n.app.DB().EventsLast(context.Background(), id)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res := n.follow(ctx, id, last[0].ID)
		n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
		timer := time.NewTimer(endBound)
		select {
		case r := <-res:
			require.NoError(t, r.err, "rep %d", rep)
			require.Equal(t, "terminated", r.terminal, "rep %d", rep)
		case <-timer.C:
			s, _ := n.app.DB().SessionGet(context.Background(), 0, id)
			t.Fatalf("rep %d: the live stream did not end within %s of terminate (session %+v, live actors %d)", rep, endBound, s, n.app.Sessions().Live())
		}
		timer.Stop()
		cancel()
		require.Eventually(t, func() bool { return n.app.Sessions().Live() == 0 }, endBound, 5*time.Millisecond,
			"rep %d: the session's actor did not retire", rep)
	}
}

// TestTurnFinishedWhileDownKeepsItsExitCode (issue 9 defect 4): a turn whose
// agent exited 0 while aod was down is recorded completed with exit 0 when
// aod restarts after the turn's deadline, not as timed out.
func TestTurnFinishedWhileDownKeepsItsExitCode(t *testing.T) {
	t.Parallel()
	for _, b := range []backendKind{backendLocal, backendFake} {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: migrations.Postgres, backend: b})
			id := n.session(n.agent(nil), "sleep:2", "timeout", 10)
			waitOutput(t, n, id, "tick 0")
			turn, err := n.app.DB().TurnLatest(context.Background(), id)
			require.NoError(t, err)
			require.NotEmpty(t, turn.ExecID)
			require.NotNil(t, turn.StartedAt)
			handle := n.handle(id)
			n.stop()
			// The agent ends on its own while aod is down.
			p, err := n.execRunner().Open(handle, turn.ExecID)
			require.NoError(t, err)
			require.Eventually(t, func() bool { _, done := p.Exit(); return done }, 30*time.Second, 20*time.Millisecond)
			code, _ := p.Exit()
			require.Equal(t, 0, code)
			// aod comes back after the turn's deadline.
			time.Sleep(time.Until(turn.StartedAt.Add(10*time.Second + 500*time.Millisecond)))
			n.restart()
			evs := n.waitDone(id, time.Minute)
			last := evs[len(evs)-1]
			require.Equal(t, "exit", last.typ(), "stderr: %s", outputText(evs, "stderr"))
			require.Equal(t, float64(0), last.data["code"])
			require.NotContains(t, outputText(evs, "stderr"), "timed out")
			require.Contains(t, outputText(evs, "stdout"), `"result":"done"`, "the output after the restart is read")
			s := n.do("GET", "/sessions/"+id, nil).obj(t)
			require.Equal(t, "completed", s["status"])
			require.Equal(t, float64(0), s["exit_code"])
			turns := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
			require.Equal(t, "completed", turns[0].(map[string]any)["status"])
		})
	}
}

// isAgentTurn reports an exec of a turn's agent CLI (not a provisioning
// step).
func isAgentTurn(req sprites.ExecRequest) bool {
	return len(req.Argv) > 5 && req.Argv[4] == "claude" && req.Argv[5] != "update"
}

// terminateOnGet commits a terminate (as the HTTP handler's transaction
// does) inside the turn's sandbox lookup: between the turn's status read
// and its pending→running update, before the actor hears of it. It counts
// agent execs started after that.
type terminateOnGet struct {
	sprites.Backend
	n          atomic.Pointer[node]
	fired      atomic.Bool
	lateExecs  atomic.Int32
	terminated chan struct{}
	err        error
}

func (b *terminateOnGet) Get(ctx context.Context, name string) (*sprites.Info, error) {
	if !b.fired.Load() {
		db := b.n.Load().app.DB()
		sessions, err := db.SessionsActive(ctx)
		if err == nil {
			for _, s := range sessions {
				if s.BackendHandle == name && s.ProvisionedAt != nil && b.fired.CompareAndSwap(false, true) {
					b.err = terminateInDB(ctx, db, s.ID)
					close(b.terminated)
				}
			}
		}
	}
	return b.Backend.Get(ctx, name)
}

func (b *terminateOnGet) Exec(ctx context.Context, name string, req sprites.ExecRequest) (sprites.Exec, error) {
	if b.fired.Load() && isAgentTurn(req) {
		b.lateExecs.Add(1)
	}
	return b.Backend.Exec(ctx, name, req)
}

// terminateInDB is the terminate handler's transaction: the session becomes
// terminated and its unfinished turns failed.
func terminateInDB(ctx context.Context, db *persistence.DB, id string) error {
	_, err := db.SessionMutate(ctx, 0, id, func(tx bun.Tx, cur *persistence.Session) (bool, error) {
		cur.Status = persistence.StatusTerminated
		_, err := tx.NewUpdate().Table("session_turns").
			Set("status = ?", persistence.StatusFailed).Set("ended_at = ?", time.Now().UTC()).
			Where("session_id = ?", cur.ID).Where("status IN (?)", bun.In([]string{persistence.StatusPending, persistence.StatusRunning})).
			Exec(ctx)
		return true, err
	})
	return err
}

// TestTerminateRacingTurnStart (issue 9 defect 7): a terminate committed
// between the turn's status read and its pending→running update leaves the
// turn failed and the session terminated, and the agent never runs.
func TestTerminateRacingTurnStart(t *testing.T) {
	t.Parallel()
	persistenceDialects(t, func(t *testing.T, d migrations.Dialect) {
		var hook *terminateOnGet
		n := startNode(t, nodeOpts{dialect: d, backend: backendLocal, wrap: func(b sprites.Backend) sprites.Backend {
			hook = &terminateOnGet{Backend: b, terminated: make(chan struct{})}
			return hook
		}})
		hook.n.Store(n)
		id := n.session(n.agent(nil), "ok")
		<-hook.terminated
		require.NoError(t, hook.err)
		// The session is terminated already, so its stream may end before
		// the turn's outcome is logged: wait for the actor to retire first
		// (it does once the outcome is durable).
		require.Eventually(t, func() bool { return n.app.Sessions().Live() == 0 }, 30*time.Second, 5*time.Millisecond)
		evs := n.waitDone(id, time.Minute)
		require.Equal(t, "terminated", evs[len(evs)-1].typ())
		require.Zero(t, hook.lateExecs.Load(), "the agent was started after terminate")
		require.Contains(t, outputText(evs, "stderr"), "turn aborted: session terminated before execution started")
		s := n.do("GET", "/sessions/"+id, nil).obj(t)
		require.Equal(t, "terminated", s["status"])
		turns := n.do("GET", "/sessions/"+id+"/turns", nil).obj(t)["data"].([]any)
		require.Equal(t, "failed", turns[0].(map[string]any)["status"], "the failed turn is not flipped back")
	})
}

// faultOnAgentExec arms the fake server's faults just before a turn's
// agent starts (provisioning execs are left alone), and can make every
// re-attach fail.
type faultOnAgentExec struct {
	sprites.Backend
	node        atomic.Pointer[node]
	faults      spritestest.Faults
	failAttach  bool
	attachCalls atomic.Int32
}

func (b *faultOnAgentExec) Exec(ctx context.Context, name string, req sprites.ExecRequest) (sprites.Exec, error) {
	if isAgentTurn(req) {
		b.node.Load().fake.SetFaults(b.faults)
	}
	return b.Backend.Exec(ctx, name, req)
}

func (b *faultOnAgentExec) Attach(ctx context.Context, name, execID string, from sprites.Offsets) (sprites.Exec, error) {
	b.attachCalls.Add(1)
	if b.failAttach {
		return nil, &sprites.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "injected attach failure", Op: "attach"}
	}
	return b.Backend.Attach(ctx, name, execID, from)
}

// TestLostExecStreamIsReattached (issue 9 defect 8): when the exec's
// WebSocket is dropped repeatedly during a turn (the client's own retries
// off), the turn re-attaches from its offsets and the output arrives
// exactly once; when re-attaching keeps failing, the agent is killed and
// the turn fails with a clear stderr event.
func TestLostExecStreamIsReattached(t *testing.T) {
	t.Parallel()
	t.Run("drops", func(t *testing.T) {
		t.Parallel()
		// Each connection (the first exec and every re-attach) is dropped
		// after 8 output frames: about every 0.3 s of a 6 s turn.
		fb := &faultOnAgentExec{faults: spritestest.Faults{DropExecs: 12, DropAfterFrames: 8}}
		n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendFake,
			clientOpts: []sprites.ClientOption{sprites.WithReattach(0, 10*time.Millisecond)},
			wrap:       func(b sprites.Backend) sprites.Backend { fb.Backend = b; return fb }})
		fb.node.Store(n)
		id := n.session(n.agent(nil), "slow:120")
		evs := n.waitDone(id, 2*time.Minute)
		require.Equal(t, "exit", evs[len(evs)-1].typ(), "stderr: %s", outputText(evs, "stderr"))
		// Every connection but the last took a drop plan (DropExecs counts
		// down per connection) and was dropped after its 8 frames; under
		// load frames carry more lines, so fewer drops happen: count them.
		dropped := int32(12-n.fake.Faults().DropExecs) - 1
		require.Positive(t, dropped, "no exec stream was dropped")
		require.GreaterOrEqual(t, fb.attachCalls.Load(), dropped, "the turn re-attached after each drop")
		var got []string
		for _, m := range numberedLine.FindAllStringSubmatch(outputText(evs, "stdout"), -1) {
			got = append(got, m[1])
		}
		want := make([]string, 120)
		for i := range want {
			want[i] = fmt.Sprintf("%04d", i+1)
		}
		require.Equal(t, want, got, "every line exactly once, in order")
		require.Equal(t, 1, strings.Count(outputText(evs, "stdout"), `"type":"result"`))
		s := n.do("GET", "/sessions/"+id, nil).obj(t)
		require.Equal(t, "completed", s["status"])
	})
	t.Run("attach keeps failing", func(t *testing.T) {
		t.Parallel()
		fb := &faultOnAgentExec{faults: spritestest.Faults{DropExecs: 1, DropAfterFrames: 8}, failAttach: true}
		n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendFake,
			clientOpts: []sprites.ClientOption{sprites.WithReattach(0, 10*time.Millisecond)},
			wrap:       func(b sprites.Backend) sprites.Backend { fb.Backend = b; return fb }})
		fb.node.Store(n)
		id := n.session(n.agent(nil), "slow:2000")
		evs := n.waitDone(id, 2*time.Minute)
		require.Equal(t, "error", evs[len(evs)-1].typ())
		stderr := outputText(evs, "stderr")
		require.Contains(t, stderr, "turn failed: lost the agent's output stream and could not re-attach")
		require.Contains(t, stderr, "the agent was stopped")
		require.Equal(t, int32(5), fb.attachCalls.Load(), "a bounded number of re-attaches")
		turn, err := n.app.DB().TurnLatest(context.Background(), id)
		require.NoError(t, err)
		p, err := n.execRunner().Open(n.handle(id), turn.ExecID)
		require.NoError(t, err)
		require.Eventually(t, func() bool { _, done := p.Exit(); return done }, 10*time.Second, 20*time.Millisecond,
			"the agent process is still running after the turn failed")
	})
}

// TestOutputCap (issue 10 item 2): an agent printing 1 GiB is stopped at the
// per-turn cap with a clear stderr event, the log holds at most the cap,
// and another session on the node completes meanwhile; the per-session cap
// stops a later turn the same way.
func TestOutputCap(t *testing.T) {
	t.Parallel()
	for _, b := range []backendKind{backendLocal, backendFake} {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: migrations.Postgres, backend: b,
				env: map[string]string{"AOD_MAX_TURN_OUTPUT": "1MiB", "AOD_MAX_SESSION_OUTPUT": "1536KiB"}})
			agent := n.agent(nil)
			flood := n.session(agent, "bytes:1G", "timeout", 600)
			other := n.session(agent, "slow:40")
			const msg = "turn failed: output limit of 1 MiB reached; the agent was stopped\n"

			evs := n.waitDone(flood, 2*time.Minute)
			require.Equal(t, "error", evs[len(evs)-1].typ())
			stderr := outputText(evs, "stderr")
			require.True(t, strings.HasSuffix(stderr, msg), "stderr: %q", stderr)
			sess, turnBytes, err := n.app.DB().OutputBytes(context.Background(), flood, 1)
			require.NoError(t, err)
			require.LessOrEqual(t, turnBytes, int64(1<<20+len(msg)))
			require.Greater(t, turnBytes, int64(1<<20-64<<10), "output up to the cap is kept")
			require.Equal(t, sess, turnBytes)
			turn, err := n.app.DB().TurnLatest(context.Background(), flood)
			require.NoError(t, err)
			p, err := n.execRunner().Open(n.handle(flood), turn.ExecID)
			require.NoError(t, err)
			require.Eventually(t, func() bool { _, done := p.Exit(); return done }, 10*time.Second, 20*time.Millisecond,
				"the agent still runs after the output cap")

			oevs := n.waitDone(other, 2*time.Minute)
			require.Equal(t, "exit", oevs[len(oevs)-1].typ())
			require.Contains(t, outputText(oevs, "stdout"), "line 0040\n")

			// The session cap: 900 KiB in turn 1, then turn 2 may add only
			// what is left of 1536 KiB.
			capped := n.session(agent, "bytes:900K")
			evs = n.waitDone(capped, 2*time.Minute)
			require.Equal(t, "exit", evs[len(evs)-1].typ(), outputText(evs, "stderr"))
			n.mustCreate("/sessions/"+capped+"/prompt", map[string]any{"prompt": "bytes:1G"}, 202)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ids := n.logIDs(capped)
			all := n.stream(ctx, capped, strconv.FormatInt(ids[len(ids)-1], 10))
			require.NoError(t, ctx.Err())
			require.Equal(t, "error", all[len(all)-1].typ())
			smsg := "turn failed: session output limit of 1536 KiB reached; the agent was stopped\n"
			require.True(t, strings.HasSuffix(outputText(all, "stderr"), smsg), "stderr: %q", outputText(all, "stderr"))
			sess, _, err = n.app.DB().OutputBytes(context.Background(), capped, 2)
			require.NoError(t, err)
			require.LessOrEqual(t, sess, int64(1536<<10+len(smsg)))
		})
	}
}

// TestPublishNeverAfterFinish (issue 9 defect 11, dev publish D19): a
// publish that arrives after the turn's finish was queued, but before it
// committed, is refused (409) instead of committing after the finish, where
// a live reader (already told the turn ended) would never see it. The
// finish is held in its transaction by a row lock on the session that the
// test takes (FOR NO KEY UPDATE: output inserts still pass, the finish's
// status update waits).
func TestPublishNeverAfterFinish(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.Postgres, backend: backendLocal,
		env: map[string]string{"AOD_DEV_PUBLISH": "1"}})
	// 3 s of output: the lock below is taken long before the agent ends.
	id := n.session(n.agent(nil), "slow:60")
	waitOutput(t, n, id, "line 0001")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	live := n.follow(ctx, id, 0)
	before := n.publish(id, "before the end\n")
	require.Positive(t, before)

	conn, err := pgx.Connect(ctx, n.cfg.DatabaseURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	var status string
	require.NoError(t, tx.QueryRow(ctx, "SELECT status FROM agent_sessions WHERE id = $1 FOR NO KEY UPDATE", id).Scan(&status))
	require.Equal(t, "running", status, "the turn ended before the test took the lock")
	// The agent exits; the turn's finish then waits for the lock.
	turn, err := n.app.DB().TurnLatest(ctx, id)
	require.NoError(t, err)
	p, err := n.execRunner().Open(n.handle(id), turn.ExecID)
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, done := p.Exit(); return done }, time.Minute, 10*time.Millisecond)
	// Watch from another connection: inside the locking transaction
	// pg_stat_activity would be one frozen snapshot.
	watch, err := pgx.Connect(ctx, n.cfg.DatabaseURL)
	require.NoError(t, err)
	defer watch.Close(context.Background())
	require.Eventually(t, func() bool {
		var waiting int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE 'UPDATE "agent_sessions"%' AND datname = current_database()`).Scan(&waiting)
		return err == nil && waiting > 0
	}, 30*time.Second, 10*time.Millisecond, "the finish never waited for the session row: %s", pgActivity(ctx, watch))

	late := make(chan int, 1)
	go func() {
		req, err := http.NewRequest("POST", n.base+"/dev/sessions/"+id+"/output", strings.NewReader("after the end\n"))
		if err != nil {
			late <- -1
			return
		}
		req.Header.Set("Authorization", "Bearer "+n.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			late <- -1
			return
		}
		resp.Body.Close()
		late <- resp.StatusCode
	}()
	// A refused publish answers at once; an accepted one waits for its
	// commit, queued behind the finish, so release the lock after a while.
	var code int
	select {
	case code = <-late:
		require.NoError(t, tx.Rollback(ctx))
	case <-time.After(2 * time.Second):
		require.NoError(t, tx.Rollback(ctx))
		code = <-late
	}
	r := <-live
	require.NoError(t, r.err)
	require.Equal(t, "exit", r.terminal)
	require.Equal(t, 409, code, "a publish after the finish was queued is refused")
	require.Equal(t, n.logIDs(id), r.ids, "the live reader saw every logged event before the terminal one")
}

// pgActivity describes the other sessions of the test's database (for
// failure messages).
func pgActivity(ctx context.Context, conn *pgx.Conn) string {
	rows, err := conn.Query(ctx, `SELECT coalesce(wait_event_type, ''), coalesce(wait_event, ''), state, left(query, 120)
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, ev, state, q string
		if err := rows.Scan(&typ, &ev, &state, &q); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "\n  [%s/%s] %s: %s", typ, ev, state, q)
	}
	return b.String()
}
