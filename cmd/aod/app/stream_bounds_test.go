package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
)

// goneSignal collects the actors' SubscriberGone signals.
type goneSignal struct {
	ch chan goneEvent
}

type goneEvent struct {
	session string
	lagged  bool
}

func newGoneSignal() *goneSignal { return &goneSignal{ch: make(chan goneEvent, 1024)} }

func (g *goneSignal) hook(session string, lagged bool) {
	select {
	case g.ch <- goneEvent{session, lagged}:
	default:
	}
}

// wait returns the next signal for session within d.
func (g *goneSignal) wait(t *testing.T, session string, d time.Duration) goneEvent {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e := <-g.ch:
			if e.session == session {
				return e
			}
		case <-timer.C:
			require.FailNow(t, "no SubscriberGone signal", "session %s within %s", session, d)
		}
	}
}

func (n *node) sseClients() string {
	resp, err := http.Get(n.base + "/metrics")
	require.NoError(n.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "aod_sse_clients "); ok {
			return v
		}
	}
	return ""
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestNeverReadingClientIsCut (issue 9 defect 3): a client that keeps its
// TCP connection open but never reads, while the session prints a flood of
// output, pins a bounded amount of the server's heap (its subscription is
// dropped as lagged once its byte budget is full) and is disconnected once
// a write misses AOD_SSE_WRITE_TIMEOUT. Not parallel: it measures the
// process's heap (the node runs in this process).
//
// The bound: the writer's byte budget (4 MiB, including batches on their
// way to the actor) + the subscriber's queue (4 MiB) + the batch being
// encoded and its encoding (≈ 9 MiB at most) + the actor's recent window
// (64 KiB) + the sandbox layer's bounded exec buffers + database and
// runtime slack. Measured growth: 3–4 MiB without -race, 18–26 MiB under
// -race (slower consumers keep every bounded stage full). The bound is 32
// MiB at the reduced scale, 64 MiB at full scale (the figure). Before the fix nothing bounded
// the queue of a stream blocked in a write, and nothing ever cut it.
func TestNeverReadingClientIsCut(t *testing.T) {
	produced, bound := 40<<20, uint64(32<<20) // 200 MiB and 64 MiB at full scale (D22)
	if fullScale() {
		produced, bound = 200<<20, 64<<20
	}
	gone := newGoneSignal()
	// Long enough for the flood to overflow the subscriber's budget first
	// on a loaded machine; either way the actor must let go of it.
	const writeTimeout = 10 * time.Second
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal,
		env:    map[string]string{"AOD_SSE_WRITE_TIMEOUT": writeTimeout.String(), "AOD_SSE_HEARTBEAT": "500ms"},
		actors: actors.Config{SubscriberGone: gone.hook}})
	lines := produced / 9 // seq prints 8 digits and a newline
	id := n.session(n.agent(nil), fmt.Sprintf("quiet:3\nflood:%d", lines), "timeout", 600)
	waitStatus(t, n, id, "running")
	base := liveHeap()

	// A raw client with a tiny receive buffer: it reads the head and the
	// start event, then nothing.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(n.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /sessions/%s/stream HTTP/1.1\r\nHost: aod\r\nAuthorization: Bearer %s\r\n\r\n", id, n.key)
	require.NoError(t, err)
	r := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	f, err := sse.ReadEvent(bufio.NewReaderSize(resp.Body, 16))
	require.NoError(t, err)
	data, err := sse.DecodeData(f)
	require.NoError(t, err)
	require.Equal(t, "start", data["type"])
	require.Equal(t, "1", n.sseClients())

	// Sample the live heap while the flood runs and the client reads nothing.
	var peak uint64
	var mu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			h := liveHeap()
			mu.Lock()
			peak = max(peak, h)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	// The subscriber overflows its byte budget and is dropped as lagged
	// (its queue with it), or, on a machine too slow to fill the budget
	// within the write deadline, the cut stream unsubscribes it: either
	// way the actor lets go of it.
	ev := gone.wait(t, id, 2*time.Minute)
	t.Logf("actor released the subscriber (lagged=%v)", ev.lagged)
	require.Eventually(t, func() bool { return n.do("GET", "/sessions/"+id, nil).obj(t)["status"] == "completed" },
		10*time.Minute, 100*time.Millisecond, "the flood completes (the client never slows the session)")
	// The stream's blocked write misses its deadline: the connection is
	// closed and the stream's goroutine ends (the gauge drops).
	require.Eventually(t, func() bool { return n.sseClients() == "0" }, writeTimeout+30*time.Second, 50*time.Millisecond,
		"the never-reading client is disconnected after its write deadline")
	close(stop)
	<-sampled
	mu.Lock()
	grown := int64(peak) - int64(base)
	mu.Unlock()
	t.Logf("produced %d MiB; heap baseline %.1f MiB, peak %.1f MiB (+%.1f MiB)", produced>>20,
		float64(base)/(1<<20), float64(peak)/(1<<20), float64(grown)/(1<<20))
	require.Less(t, grown, int64(bound), "heap above baseline while a client never reads")

	// What the client can still read ends early: the server cut it.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, _ := io.Copy(io.Discard, r)
	require.Less(t, got, int64(produced), "the stream was cut, not completed")
}

// A live session's actor serves the stream's start without the database
// (Attach): it must still refuse another user's key (404, as from the
// log path), and serve its owner the same events the log holds.
func TestLiveStreamAttachChecksOwner(t *testing.T) {
	t.Parallel()
	n := devNode(t)
	id := n.session(n.agent(nil), "quiet:60")
	waitStatus(t, n, id, "running")
	first := n.publish(id, "one")
	n.publish(id, "two")

	ctx := context.Background()
	u, err := n.app.DB().UserCreate(ctx, "other")
	require.NoError(t, err)
	raw, _, err := n.app.DB().APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, Name: "other"})
	require.NoError(t, err)
	req, err := http.NewRequest("GET", n.base+"/sessions/"+id+"/stream", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+raw)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 404, resp.StatusCode, string(body))
	require.JSONEq(t, `{"detail": "Session not found"}`, string(body))

	// The owner, resuming after the first published event, gets exactly
	// the log's rows after it (from the actor's memory), then live ones.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, r := n.rawStream(sctx, id, "Last-Event-ID", strconv.FormatInt(first, 10))
	third := n.publish(id, "three")
	var got []int64
	for len(got) == 0 || got[len(got)-1] < third {
		ids, _ := readIDs(t, r, 1)
		require.NotEmpty(t, ids)
		got = append(got, ids...)
	}
	rows, err := n.app.DB().EventsAfter(ctx, id, first, 1000)
	require.NoError(t, err)
	var want []int64
	for _, e := range rows {
		want = append(want, e.ID)
	}
	require.Equal(t, want, got)
	n.mustCreate("/sessions/"+id+"/terminate", nil, 200)
}

// Streams are written on the hijacked connection; one that ends cleanly
// hands the connection back for keep-alive, as fasthttp's stream writer
// did: a client may send its next request on it, even pipelined behind the
// stream request.
func TestStreamConnectionKeepsAlive(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOpts{dialect: migrations.SQLite, backend: backendLocal})
	id := n.session(n.agent(nil), "stdout:hello")
	n.waitDone(id, time.Minute)
	for _, pipelined := range []bool{false, true} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.base, "http://"))
		require.NoError(t, err)
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		streamReq := fmt.Sprintf("GET /sessions/%s/stream HTTP/1.1\r\nHost: aod\r\nAuthorization: Bearer %s\r\n\r\n", id, n.key)
		getReq := fmt.Sprintf("GET /sessions/%s HTTP/1.1\r\nHost: aod\r\nAuthorization: Bearer %s\r\n\r\n", id, n.key)
		if pipelined {
			streamReq += getReq
		}
		_, err = io.WriteString(conn, streamReq)
		require.NoError(t, err)
		r := bufio.NewReader(conn)
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
		require.Empty(t, resp.Header.Get("Connection"))
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err, "a complete chunked body")
		require.Contains(t, string(body), `"type": "exit"`)
		if !pipelined {
			_, err = io.WriteString(conn, getReq)
			require.NoError(t, err)
		}
		resp, err = http.ReadResponse(r, nil)
		require.NoError(t, err, "pipelined=%v: the next request is served on the same connection", pipelined)
		b, _ := io.ReadAll(resp.Body)
		require.Equal(t, 200, resp.StatusCode, string(b))
		require.Contains(t, string(b), id)
		conn.Close()
	}
}
