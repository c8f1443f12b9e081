package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
)

// rawStream returns the response of GET /stream and a reader on its body.
func (n *node) rawStream(ctx context.Context, id string, headers ...string) (*http.Response, *bufio.Reader) {
	n.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/sessions/"+id+"/stream", nil)
	require.NoError(n.t, err)
	req.Header.Set("Authorization", "Bearer "+n.key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(n.t, err)
	n.t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// expectedFrames renders the log rows after cursor as AoD frames, written
// independently of the server's encoder for ASCII-only data.
func expectedFrames(rows []persistence.Event) string {
	var b strings.Builder
	prevTurn := "unset"
	for _, e := range rows {
		if e.Kind == persistence.KindStage {
			fmt.Fprintf(&b, "id: %d\ndata: {\"type\": \"stage\", \"id\": %d, \"stage\": \"%s\", \"state\": \"%s\"", e.ID, e.ID, e.Stage, e.State)
			if e.DurationMS != nil {
				fmt.Fprintf(&b, ", \"duration_ms\": %d", *e.DurationMS)
			}
			if e.State == "failed" && e.Data != "" {
				fmt.Fprintf(&b, ", \"message\": %s", sse.AppendString(nil, e.Data))
			}
			b.WriteString("}\n\n")
			continue
		}
		turn := "null"
		if e.Turn != nil {
			turn = strconv.Itoa(*e.Turn)
		}
		if turn != prevTurn {
			fmt.Fprintf(&b, "data: {\"type\": \"turn_start\", \"id\": %d, \"turn\": %s}\n\n", e.ID, turn)
			prevTurn = turn
		}
		fmt.Fprintf(&b, "id: %d\ndata: {\"type\": \"output\", \"id\": %d, \"stream\": \"%s\", \"data\": %s, \"turn\": %s}\n\n",
			e.ID, e.ID, e.Stream, sse.AppendString(nil, e.Data), turn)
	}
	return b.String()
}

func TestStreamFramingAndCursor(t *testing.T) {
	t.Parallel()
	persistenceDialects(t, func(t *testing.T, d migrations.Dialect) {
		n := startNode(t, nodeOpts{dialect: d, backend: backendLocal})
		id := n.session(n.agent(nil), "stderr:caf\u00e9 <b>&\"quoted\"")
		n.waitDone(id, time.Minute)
		rows, err := n.app.DB().EventsAfter(context.Background(), id, 0, 100000)
		require.NoError(t, err)
		last := rows[len(rows)-1].ID

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, r := n.rawStream(ctx, id)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
		require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
		body, err := io.ReadAll(r)
		require.NoError(t, err)
		want := fmt.Sprintf("data: {\"type\": \"start\", \"provider\": \"anthropic\", \"session_id\": \"%s\"}\n\n", id) +
			expectedFrames(rows) + fmt.Sprintf("id: %d\ndata: {\"type\": \"exit\", \"id\": %d, \"code\": 0}\n\n", last, last)
		require.Equal(t, want, string(body), "the whole stream, byte for byte")
		require.Contains(t, string(body), `caf\u00e9 <b>&\"quoted\"`)

		// Cursor rules: Last-Event-ID wins over since; negative clamps to 0;
		// the cursor's own row is not repeated.
		mid := rows[len(rows)/2].ID
		cases := []struct {
			name    string
			headers []string
			query   string
			from    int64
		}{
			{"since", nil, "?since=" + strconv.FormatInt(mid, 10), mid},
			{"header wins", []string{"Last-Event-ID", strconv.FormatInt(mid, 10)}, "?since=0", mid},
			{"negative", nil, "?since=-5", 0},
			{"beyond the end", nil, "?since=" + strconv.FormatInt(last+100, 10), last + 100},
		}
		for _, c := range cases {
			req, err := http.NewRequest("GET", n.base+"/sessions/"+id+"/stream"+c.query, nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+n.key)
			for i := 0; i+1 < len(c.headers); i += 2 {
				req.Header.Set(c.headers[i], c.headers[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			var after []persistence.Event
			for _, e := range rows {
				if e.ID > c.from {
					after = append(after, e)
				}
			}
			termID := max(c.from, 0)
			if len(after) > 0 {
				termID = last
			}
			idLine := ""
			if termID > 0 {
				idLine = fmt.Sprintf("id: %d\n", termID)
			}
			want := fmt.Sprintf("data: {\"type\": \"start\", \"provider\": \"anthropic\", \"session_id\": \"%s\"}\n\n", id) +
				expectedFrames(after) + fmt.Sprintf("%sdata: {\"type\": \"exit\", \"id\": %d, \"code\": 0}\n\n", idLine, termID)
			require.Equal(t, want, string(got), c.name)
		}
		for _, bad := range []string{"?since=abc", "?since=1.5"} {
			r := n.do("GET", "/sessions/"+id+"/stream"+bad, nil)
			require.Equal(t, 400, r.status)
			require.Equal(t, map[string]any{"detail": "since must be an integer"}, r.obj(t))
		}
		req, _ := http.NewRequest("GET", n.base+"/sessions/"+id+"/stream?since=1", nil)
		req.Header.Set("Authorization", "Bearer "+n.key)
		req.Header.Set("Last-Event-ID", "x")
		resp2, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp2.Body.Close()
		require.Equal(t, 400, resp2.StatusCode, "a bad Last-Event-ID wins over a good since")
		// 404 for unknown sessions, 405 bare for other methods.
		require.Equal(t, 404, n.do("GET", "/sessions/0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90/stream", nil).status)
		require.Equal(t, 405, n.do("POST", "/sessions/"+id+"/stream", nil).status)
	})
}

func persistenceDialects(t *testing.T, fn func(t *testing.T, d migrations.Dialect)) {
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

func TestStreamHeartbeatAndStale(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal,
		env: map[string]string{"AOD_SSE_HEARTBEAT": "200ms", "AOD_SSE_STALE": "2s"}})
	id := n.session(n.agent(nil), "quiet:60")
	waitStatus(t, n, id, "running")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, r := n.rawStream(ctx, id)
	var heartbeats int
	var frames []sse.Frame
	for {
		f, err := sse.ReadEvent(r)
		if err != nil {
			break
		}
		if f.Comment == "heartbeat" {
			heartbeats++
			continue
		}
		frames = append(frames, f)
	}
	require.GreaterOrEqual(t, heartbeats, 3, "`: heartbeat` comments while idle")
	last := frames[len(frames)-1]
	d, err := sse.DecodeData(last)
	require.NoError(t, err)
	require.Equal(t, "stale", d["type"])
	require.Equal(t, "No output for 2s", d["message"])
	require.Equal(t, last.ID, strconv.FormatInt(int64(d["id"].(float64)), 10))
	n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
}

// publish appends one output event through the dev hook (D19).
func (n *node) publish(id, data string) int64 {
	n.t.Helper()
	req, err := http.NewRequest("POST", n.base+"/dev/sessions/"+id+"/output", strings.NewReader(data))
	require.NoError(n.t, err)
	req.Header.Set("Authorization", "Bearer "+n.key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(n.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(n.t, 201, resp.StatusCode, string(b))
	v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(string(b), `{"id":`), "}"), 10, 64)
	require.NoError(n.t, err, string(b))
	return v
}

func devNode(t *testing.T) *node {
	return startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal,
		env: map[string]string{"AOD_DEV_PUBLISH": "1"}})
}

func TestDevPublishHook(t *testing.T) {
	t.Parallel()
	n := devNode(t)
	id := n.session(n.agent(nil), "quiet:60")
	r := n.do("POST", "/dev/sessions/"+id+"/output", "x")
	if r.status != 201 { // still provisioning
		require.Equal(t, 409, r.status)
		require.Equal(t, "Session is not running", r.obj(t)["detail"])
	}
	waitStatus(t, n, id, "running")
	first := n.publish(id, "hello")
	second := n.publish(id, "world")
	require.Greater(t, second, first)
	rows, err := n.app.DB().EventsAfter(context.Background(), id, first-1, 10)
	require.NoError(t, err)
	require.Equal(t, "hello", rows[0].Data)
	require.Equal(t, "stdout", rows[0].Stream)
	require.Equal(t, 1, *rows[0].Turn)
	n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
	require.Equal(t, 409, n.do("POST", "/dev/sessions/"+id+"/output", "late").status)
	// Without AOD_DEV_PUBLISH the route does not exist.
	plain := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal})
	require.Equal(t, 404, plain.do("POST", "/dev/sessions/"+id+"/output", "x").status)
}

// readIDs reads a stream until stop, returning the ids of id-bearing
// events (turn_start excluded) and the last one.
func readIDs(t *testing.T, r *bufio.Reader, max int) (ids []int64, terminal bool) {
	t.Helper()
	for max <= 0 || len(ids) < max {
		f, err := sse.ReadEvent(r)
		if err != nil {
			return ids, false
		}
		if f.Comment != "" || f.ID == "" {
			continue
		}
		d, err := sse.DecodeData(f)
		require.NoError(t, err)
		id, err := strconv.ParseInt(f.ID, 10, 64)
		require.NoError(t, err)
		switch d["type"] {
		case "exit", "error", "terminated", "stale":
			return ids, true
		}
		ids = append(ids, id)
	}
	return ids, false
}

func TestReconnectAtRandomCutPoints(t *testing.T) {
	t.Parallel()
	n := devNode(t)
	id := n.session(n.agent(nil), "quiet:600", "timeout", 600)
	waitStatus(t, n, id, "running")
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n.publish(id, fmt.Sprintf("chunk %d\n", i))
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	var got []int64
	cursor := ""
	for cut := 0; cut < 200; cut++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		headers := []string{}
		if cursor != "" {
			headers = []string{"Last-Event-ID", cursor}
		}
		_, r := n.rawStream(ctx, id, headers...)
		ids, _ := readIDs(t, r, 1+rng.IntN(20))
		cancel() // disconnect after a random event
		got = append(got, ids...)
		if len(ids) > 0 {
			cursor = strconv.FormatInt(ids[len(ids)-1], 10)
		}
	}
	close(stop)
	pubWG.Wait()
	n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, r := n.rawStream(ctx, id, "Last-Event-ID", cursor)
	rest, terminal := readIDs(t, r, 0)
	require.True(t, terminal)
	got = append(got, rest...)

	rows, err := n.app.DB().EventsAfter(context.Background(), id, 0, 1000000)
	require.NoError(t, err)
	want := make([]int64, len(rows))
	for i, e := range rows {
		want[i] = e.ID
	}
	require.Equal(t, want, got, "exactly the events missed, in order, across 200 reconnects")
}

func TestManySubscribersOneStalled(t *testing.T) {
	t.Parallel()
	subscribers, chunks := 50, 10000 // 500 × 100k at full scale (D22)
	if fullScale() {
		subscribers, chunks = 500, 100000
	}
	// A small per-subscriber buffer, so the stalled client overflows it and
	// must catch up from the log. The write deadline is longer than the
	// stall: this test is about lagging, not about cutting dead clients.
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal,
		env:    map[string]string{"AOD_DEV_PUBLISH": "1", "AOD_SSE_WRITE_TIMEOUT": "10m"},
		actors: actors.Config{SubscriberBuffer: 8}})
	id := n.session(n.agent(nil), "quiet:3600", "timeout", 3600) // outlives a slow -race run
	waitStatus(t, n, id, "running")

	type result struct {
		ids []int64
	}
	results := make([]result, subscribers)
	var wg sync.WaitGroup
	ready := make(chan struct{}, subscribers+1)
	for i := range subscribers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			_, r := n.rawStream(ctx, id)
			ready <- struct{}{}
			results[i].ids, _ = readIDs(t, r, 0)
		}()
	}
	// The stalled subscriber stops reading until publishing is over.
	stalled := make(chan []int64, 1)
	release := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, r := n.rawStream(ctx, id)
		ready <- struct{}{}
		<-release
		ids, _ := readIDs(t, r, 0)
		stalled <- ids
	}()
	for range subscribers + 1 {
		<-ready
	}
	payload := strings.Repeat("x", 1000)
	var pub sync.WaitGroup
	per := chunks / 8
	for w := range 8 {
		pub.Add(1)
		go func() {
			defer pub.Done()
			for i := range per {
				n.publish(id, fmt.Sprintf("%d-%d %s\n", w, i, payload))
			}
		}()
	}
	pub.Wait()
	n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
	wg.Wait()
	close(release)
	slow := <-stalled

	rows, err := n.app.DB().EventsAfter(context.Background(), id, 0, 1000000)
	require.NoError(t, err)
	want := make([]int64, len(rows))
	for i, e := range rows {
		want[i] = e.ID
	}
	require.GreaterOrEqual(t, len(want), chunks)
	for i := range results {
		require.Equal(t, want, results[i].ids, "subscriber %d got the identical sequence", i)
	}
	require.Equal(t, want, slow, "the stalled subscriber still gets everything")
	require.Positive(t, n.app.Sessions().LaggedSubscriptions(), "the stalled subscriber overflowed and caught up from the log")
}

// TestDisconnectedClientIsUnsubscribed: a client that goes away is noticed
// by the next heartbeat's write and unsubscribed within two heartbeats; the
// session actor itself signals that it released the subscriber.
func TestDisconnectedClientIsUnsubscribed(t *testing.T) {
	t.Parallel()
	gone := newGoneSignal()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal,
		env: map[string]string{"AOD_SSE_HEARTBEAT": "300ms"}, actors: actors.Config{SubscriberGone: gone.hook}})
	id := n.session(n.agent(nil), "quiet:60")
	waitStatus(t, n, id, "running")
	ctx, cancel := context.WithCancel(context.Background())
	_, r := n.rawStream(ctx, id)
	_, err := sse.ReadEvent(r) // the start event
	require.NoError(t, err)
	require.Equal(t, "1", n.sseClients())
	cancel()
	// The session prints nothing for 60 s, so only a heartbeat's failed
	// write can reveal the disconnect: the actor must release the
	// subscriber well before the session would produce output (normally
	// within two heartbeats; the bound is loose for loaded machines).
	ev := gone.wait(t, id, 10*time.Second)
	require.False(t, ev.lagged, "unsubscribed, not lagged")
	require.Eventually(t, func() bool { return n.sseClients() == "0" }, 10*time.Second, 20*time.Millisecond)
	n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
}

// TestDevPublishRacingTurnEnd: publishes that race the end of the turn
// (the agent exits while they are in flight) answer 201 with an event
// logged before the turn's exit, or 409 — never a 5xx (the black-box run
// found 503s: a publish waited on the actor's context, which ends as the
// actor retires, instead of on the writer's answer).
func TestDevPublishRacingTurnEnd(t *testing.T) {
	t.Parallel()
	n := devNode(t)
	for rep := range 3 {
		id := n.session(n.agent(nil), "quiet:1")
		waitStatus(t, n, id, "running")
		type answer struct {
			status int
			id     int64
			err    error
		}
		answers := make(chan answer, 4096)
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				for {
					req, err := http.NewRequest("POST", n.base+"/dev/sessions/"+id+"/output", strings.NewReader("x"))
					if err != nil {
						answers <- answer{err: err}
						return
					}
					req.Header.Set("Authorization", "Bearer "+n.key)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						answers <- answer{err: err}
						return
					}
					var body struct {
						ID int64 `json:"id"`
					}
					_ = json.NewDecoder(resp.Body).Decode(&body)
					resp.Body.Close()
					answers <- answer{status: resp.StatusCode, id: body.ID}
					if resp.StatusCode != 201 {
						return
					}
				}
			})
		}
		wg.Wait()
		close(answers)
		evs := n.waitDone(id, time.Minute)
		exit := evs[len(evs)-1]
		require.Equal(t, "exit", exit.typ(), "rep %d: %s", rep, exit.raw)
		exitID, err := strconv.ParseInt(exit.idLine, 10, 64)
		require.NoError(t, err)
		published := 0
		for a := range answers {
			require.NoError(t, a.err)
			require.Contains(t, []int{201, 409}, a.status, "rep %d: a publish racing the turn's end answered %d", rep, a.status)
			if a.status == 201 {
				published++
				require.LessOrEqual(t, a.id, exitID, "rep %d: event %d is not in the stream before the turn's exit (%d)", rep, a.id, exitID)
			}
		}
		require.Positive(t, published, "rep %d: no publish landed while the turn ran", rep)
	}
}
