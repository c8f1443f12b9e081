package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aodhq/aod/persistence"
)

// Result is one benchmark's figures, printed as key=value lines and
// written to the JSON report.
type Result struct {
	Name    string         `json:"name"`
	Start   time.Time      `json:"start"`
	Params  map[string]any `json:"params"`
	Figures map[string]any `json:"figures"`
	Notes   []string       `json:"notes,omitempty"`
}

func newResult(name string, params map[string]any) *Result {
	if n, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0); err == nil {
		// The raw syscall answers 20 − nice.
		params["nice"] = 20 - n
	}
	return &Result{Name: name, Start: time.Now().UTC(), Params: params, Figures: map[string]any{"loadavg_1m_start": LoadAvg()}}
}

func (r *Result) set(k string, v any) { r.Figures[k] = v }

func (r *Result) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

func (r *Result) stats(prefix string, s Stats) {
	r.set(prefix+"_n", s.N)
	r.set(prefix+"_p50_ms", msf(s.P50))
	r.set(prefix+"_p90_ms", msf(s.P90))
	r.set(prefix+"_p99_ms", msf(s.P99))
	r.set(prefix+"_p999_ms", msf(s.P999))
	r.set(prefix+"_max_ms", msf(s.Max))
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serverProblems records the child's WARN/ERROR log lines and the lagged
// subscriber counter.
func serverProblems(ctx context.Context, srv *Server, r *Result) {
	r.set("loadavg_1m_end", LoadAvg())
	w, e, ex := srv.LogProblems()
	r.set("server_log_warn", w)
	r.set("server_log_error", e)
	for _, line := range ex {
		r.note("server log: %s", line)
	}
	r.set("sse_subscribers_lagged_total", srv.Metric(ctx, "aod_sse_subscribers_lagged_total"))
	if !srv.Alive() {
		r.note("the server process exited during the run")
	}
}

// benchLatency measures chunk→client latency: the stand-in agent prints
// lines "@@<µs>" and an SSE client computes receipt − emit; a baseline
// poller reads the same session's log with EventsAfter(cursor, 100) every
// 500 ms and computes the same for the same rows.
func benchLatency(ctx context.Context, o *options) (*Result, error) {
	r := newResult("latency", map[string]any{"lines": o.lines, "interval_s": o.interval, "clients": o.clients})
	srv, err := StartServer(ctx, o.server(nil))
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	db, err := srv.OpenDB(ctx)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	agent, err := srv.Agent(ctx)
	if err != nil {
		return nil, err
	}
	id, err := srv.Session(ctx, agent, fmt.Sprintf("emit:%d:%s", o.lines, o.interval))
	if err != nil {
		return nil, err
	}
	srv.Prioritize()
	tr := newTransports(1)[0]
	sctx, cancel := context.WithTimeout(ctx, time.Duration(o.lines)*time.Second/10+5*time.Minute)
	defer cancel()
	var subs []*Subscriber
	for range o.clients {
		s, err := Subscribe(sctx, tr, srv.Base, srv.Key, id, 0)
		if err != nil {
			return nil, err
		}
		s.Record.Store(true)
		subs = append(subs, s)
	}
	// The baseline: AoD's design, polling the log.
	var pollLat, toLog []int32
	pollDone := make(chan error, 1)
	var stopAt atomic.Int64
	stopAt.Store(1<<62 - 1)
	go func() {
		cursor := int64(0)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-sctx.Done():
				pollDone <- sctx.Err()
				return
			}
			for {
				rows, err := db.EventsAfter(sctx, id, cursor, 100)
				if err != nil {
					pollDone <- err
					return
				}
				now := time.Now().UnixMicro()
				for i := range rows {
					pollLat = appendMarkers(pollLat, []byte(rows[i].Data), now)
					// created_at is stamped when the writer starts the
					// commit: emit → created_at is the sandbox, exec and
					// writer-queue share of the SSE latency.
					toLog = appendMarkers(toLog, []byte(rows[i].Data), rows[i].CreatedAt.UnixMicro())
					cursor = rows[i].ID
				}
				if len(rows) < 100 {
					break
				}
			}
			if cursor >= stopAt.Load() {
				pollDone <- nil
				return
			}
		}
	}()
	for _, s := range subs {
		<-s.Done
	}
	stopAt.Store(subs[0].LastID.Load())
	if err := <-pollDone; err != nil {
		return nil, fmt.Errorf("baseline poller: %w", err)
	}
	var all []int32
	for i, s := range subs {
		if t, _ := s.Terminal.Load().(string); !strings.Contains(t, "exit") {
			e, _ := s.Err.Load().(error)
			return nil, fmt.Errorf("client %d ended with %q (%v)", i, t, e)
		}
		all = append(all, s.Lat...)
	}
	sse, poll := summarize(all), summarize(pollLat)
	r.stats("sse", sse)
	r.stats("poll", poll)
	r.stats("emit_to_commit_start", summarize(toLog))
	if sse.P99 > 0 {
		r.set("ratio_p50_poll_over_sse", float64(poll.P50)/float64(sse.P50))
		r.set("ratio_p99_poll_over_sse", float64(poll.P99)/float64(sse.P99))
	}
	r.set("target_p99_ms", 10.0)
	r.set("target_met", sse.P99 <= 10*time.Millisecond)
	if want := o.lines * o.clients; sse.N != want {
		r.note("SSE clients read %d markers, want %d", sse.N, want)
	}
	if poll.N != o.lines {
		r.note("the poller read %d markers, want %d", poll.N, o.lines)
	}
	serverProblems(ctx, srv, r)
	return r, nil
}

// deliveryParams shape a fan-out run: sessions × per-session subscribers,
// events published through the dev hook at rate (total, round-robin over
// the sessions) for dur.
type deliveryParams struct {
	name       string
	sessions   int
	perSession int
	rate       int
	dur        time.Duration
	payload    int
	transports int
}

// benchDelivery attaches subscribers to running sessions, measures the
// server's RSS before and after, then publishes at a fixed rate and
// measures per-delivery latency and the server's CPU per delivered event.
func benchDelivery(ctx context.Context, o *options, p deliveryParams) (*Result, error) {
	r := newResult(p.name, map[string]any{"sessions": p.sessions, "subscribers_per_session": p.perSession,
		"subscribers": p.sessions * p.perSession, "rate_per_s": p.rate, "duration_s": p.dur.Seconds(), "payload_bytes": p.payload})
	srv, err := StartServer(ctx, o.server(nil))
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	agent, err := srv.Agent(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, p.sessions)
	for i := range ids {
		if ids[i], err = srv.Session(ctx, agent, "quiet:600"); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	for _, id := range ids {
		if _, err := srv.WaitStatus(ctx, id, 10*time.Minute, "running"); err != nil {
			return nil, err
		}
	}
	r.set("provision_s", time.Since(t0).Seconds())
	defer func() {
		for _, id := range ids {
			srv.Terminate(context.Background(), id)
		}
	}()
	time.Sleep(2 * time.Second)
	pid := srv.Pid()
	rss0, _ := ProcRSS(pid)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trs := newTransports(p.transports)
	subs := make([][]*Subscriber, p.sessions)
	for i := range subs {
		subs[i] = make([]*Subscriber, p.perSession)
	}
	t0 = time.Now()
	attachCPU0 := srv.sampleCPU()
	var attachErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	n := 0
	for j := range p.perSession {
		for i := range p.sessions {
			wg.Add(1)
			sem <- struct{}{}
			go func(i, j, n int) {
				defer wg.Done()
				defer func() { <-sem }()
				s, err := Subscribe(sctx, trs[n%len(trs)], srv.Base, srv.Key, ids[i], 0)
				if err != nil {
					attachErr.Store(err)
					return
				}
				subs[i][j] = s
			}(i, j, n)
			n++
		}
	}
	wg.Wait()
	if e, _ := attachErr.Load().(error); e != nil {
		return nil, fmt.Errorf("attach: %w", e)
	}
	var flat []*Subscriber
	for i := range subs {
		flat = append(flat, subs[i]...)
	}
	if err := waitAll(flat, 2*time.Minute, func(s *Subscriber) bool { return s.Started.Load() }); err != nil {
		return nil, fmt.Errorf("start events: %w", err)
	}
	r.set("attach_s", time.Since(t0).Seconds())
	// Server CPU (aod and its Postgres backends) per connect: auth,
	// session read, subscribe, start event.
	attachCPU1 := srv.sampleCPU()
	if n := len(flat); n > 0 {
		r.set("cpu_us_per_connect", float64((attachCPU1.aod-attachCPU0.aod).Microseconds())/float64(n))
		r.set("cpu_us_per_connect_incl_postgres", float64((attachCPU1.aod-attachCPU0.aod+attachCPU1.pg-attachCPU0.pg).Microseconds())/float64(n))
	}
	pub := newPublisher(srv)
	// One warm-up event per session proves every subscriber is live.
	for _, id := range ids {
		if err := pub.post(ctx, id, "warm"); err != nil {
			return nil, fmt.Errorf("warm-up publish: %w", err)
		}
	}
	if err := waitAll(flat, time.Minute, func(s *Subscriber) bool { return s.Outputs.Load() >= 1 }); err != nil {
		return nil, fmt.Errorf("warm-up delivery: %w", err)
	}
	time.Sleep(3 * time.Second)
	rss1, _ := ProcRSS(pid)
	nsubs := len(flat)
	r.set("server_rss_before_mib", float64(rss0)/(1<<20))
	r.set("server_rss_after_attach_mib", float64(rss1)/(1<<20))
	r.set("rss_kib_per_subscriber", float64(rss1-rss0)/1024/float64(nsubs))

	base := make([]int64, nsubs)
	for i, s := range flat {
		base[i] = s.Outputs.Load()
		s.Record.Store(true)
	}
	// Idle cost of the node with these subscribers attached (heartbeats,
	// timers), measured over a quiet window before publishing.
	idle0, idleT := srv.sampleCPU(), time.Now()
	time.Sleep(o.idle)
	idle1 := srv.sampleCPU()
	idleCores := (idle1.aod - idle0.aod).Seconds() / time.Since(idleT).Seconds()
	r.set("server_idle_cpu_cores", idleCores)
	srv.Prioritize()
	cpu0 := srv.sampleCPU()
	start := time.Now()
	attempted, sent := pub.run(ctx, ids, p.rate, p.dur, p.payload)
	pubEnd := time.Now()
	// Publishing is round-robin and subscribers are flattened session by
	// session: subscriber i belongs to session i/perSession, which was sent
	// attempted/sessions events (one more for the first attempted%sessions).
	want := func(i int) int64 {
		si := i / p.perSession
		c := int64(attempted / p.sessions)
		if si < attempted%p.sessions {
			c++
		}
		return c
	}
	drainErr := waitAllIdx(flat, 60*time.Second, func(i int, s *Subscriber) bool { return s.Outputs.Load()-base[i] >= want(i) })
	end := time.Now()
	cpu1 := srv.sampleCPU()
	rss2, _ := ProcRSS(pid)
	var delivered, missing int64
	for i, s := range flat {
		got := s.Outputs.Load() - base[i]
		delivered += got
		if d := want(i) - got; d > 0 {
			missing += d
		}
	}
	cancel()
	var all []int32
	for _, s := range flat {
		<-s.Done
		all = append(all, s.Lat...)
	}
	st := summarize(all)
	r.stats("latency", st)
	r.stats("publish_post", summarize(pub.lat))
	r.set("publish_post_timeline", timeline(pub.at, pub.lat, 5000))
	r.set("published", sent)
	r.set("publish_attempted", attempted)
	r.set("publish_errors", pub.errors.Load())
	r.set("publish_window_s", pubEnd.Sub(start).Seconds())
	r.set("drain_s", end.Sub(pubEnd).Seconds())
	r.set("delivered", delivered)
	r.set("missing_deliveries", missing)
	r.set("deliveries_per_s", float64(delivered)/pubEnd.Sub(start).Seconds())
	aodCPU, pgCPU := cpu1.aod-cpu0.aod, cpu1.pg-cpu0.pg
	r.set("server_cpu_s", aodCPU.Seconds())
	r.set("server_cpu_cores", aodCPU.Seconds()/end.Sub(start).Seconds())
	r.set("postgres_cpu_s", pgCPU.Seconds())
	r.set("client_cpu_cores", (cpu1.self-cpu0.self).Seconds()/end.Sub(start).Seconds())
	// Scheduler evidence: the node's threads' time runnable but waiting
	// for a CPU, against their time running (threads that exited during
	// the window are not counted).
	r.set("server_sched_run_s", (cpu1.run - cpu0.run).Seconds())
	r.set("server_sched_wait_s", (cpu1.wait - cpu0.wait).Seconds())
	if delivered > 0 && cpu0.writes >= 0 {
		// Below 1 when events reach a subscriber in batches (one flush
		// for several events).
		r.set("server_write_syscalls_per_delivery", float64(cpu1.writes-cpu0.writes)/float64(delivered))
	}
	if delivered > 0 {
		r.set("cpu_us_per_delivery", float64(aodCPU.Microseconds())/float64(delivered))
		r.set("cpu_us_per_delivery_incl_postgres", float64((aodCPU+pgCPU).Microseconds())/float64(delivered))
		busy := aodCPU.Seconds() - idleCores*end.Sub(start).Seconds()
		r.set("cpu_us_per_delivery_minus_idle", busy*1e6/float64(delivered))
		r.set("cpu_us_per_publish", float64(aodCPU.Microseconds())/float64(attempted))
	}
	r.set("server_rss_after_run_mib", float64(rss2)/(1<<20))
	if drainErr != nil {
		r.note("drain: %v", drainErr)
	}
	ended := 0
	for _, s := range flat {
		if t, _ := s.Terminal.Load().(string); t != "" {
			ended++
		}
	}
	if ended > 0 {
		r.note("%d subscribers got a terminal event before the end", ended)
	}
	serverProblems(ctx, srv, r)
	return r, nil
}

// timeline renders "t0s:p50/max" (ms) per bucket of bucketMS over the
// publishing window, to show whether latency is steady or builds up.
func timeline(at, lat []int32, bucketMS int32) string {
	buckets := map[int32][]int32{}
	var last int32
	for i := range at {
		b := at[i] / bucketMS
		buckets[b] = append(buckets[b], lat[i])
		last = max(last, b)
	}
	var sb strings.Builder
	for b := int32(0); b <= last; b++ {
		st := summarize(buckets[b])
		fmt.Fprintf(&sb, "%ds:%.0f/%.0f ", b*bucketMS/1000, msf(st.P50), msf(st.Max))
	}
	return strings.TrimSpace(sb.String())
}

func waitAll(subs []*Subscriber, timeout time.Duration, ok func(*Subscriber) bool) error {
	return waitAllIdx(subs, timeout, func(_ int, s *Subscriber) bool { return ok(s) })
}

func waitAllIdx(subs []*Subscriber, timeout time.Duration, ok func(int, *Subscriber) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		bad := 0
		for i, s := range subs {
			if !ok(i, s) {
				bad++
			}
		}
		if bad == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d subscribers not there after %s", bad, len(subs), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publisher posts events through the D19 hook.
type publisher struct {
	srv    *Server
	client *http.Client
	mu     sync.Mutex
	lat    []int32
	at     []int32 // start of each publish, ms since the window began
	errors atomic.Int64
}

func newPublisher(srv *Server) *publisher {
	return &publisher{srv: srv, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}}
}

func (p *publisher) post(ctx context.Context, id, body string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", p.srv.Base+"/dev/sessions/"+id+"/output", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.srv.Key)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 {
		return fmt.Errorf("publish: HTTP %d %s", resp.StatusCode, b)
	}
	return nil
}

// run publishes at rate events/s for dur, round-robin over ids; each body
// is "@@<µs>" padded with 'x' to payload bytes. It returns the number of
// events attempted and accepted (201).
func (p *publisher) run(ctx context.Context, ids []string, rate int, dur time.Duration, payload int) (attempted, accepted int) {
	interval := time.Second / time.Duration(rate)
	total := int(dur / interval)
	var ok atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for k := range total {
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		id := ids[k%len(ids)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			body := marker + strconv.FormatInt(t.UnixMicro(), 10)
			if pad := payload - len(body); pad > 0 {
				body += strings.Repeat("x", pad)
			}
			err := p.post(ctx, id, body)
			l := int32(time.Since(t).Microseconds())
			p.mu.Lock()
			p.lat = append(p.lat, l)
			p.at = append(p.at, int32(t.Sub(start).Milliseconds()))
			p.mu.Unlock()
			if err != nil {
				p.errors.Add(1)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	return total, int(ok.Load())
}

// benchReplay inserts events directly into a completed session's log and
// times one client reading the whole replay until the terminal event.
func benchReplay(ctx context.Context, o *options) (*Result, error) {
	r := newResult("replay", map[string]any{"events": o.replayEvents, "insert_batch": o.insertBatch, "data_bytes": 9})
	srv, err := StartServer(ctx, o.server(nil))
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	db, err := srv.OpenDB(ctx)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	agent, err := srv.Agent(ctx)
	if err != nil {
		return nil, err
	}
	id, err := srv.Session(ctx, agent, "")
	if err != nil {
		return nil, err
	}
	if st, err := srv.WaitStatus(ctx, id, 5*time.Minute, "completed", "failed"); err != nil || st != "completed" {
		return nil, fmt.Errorf("setup session: %s %v", st, err)
	}
	t0 := time.Now()
	turn := 1
	for done := 0; done < o.replayEvents; {
		n := min(o.insertBatch, o.replayEvents-done)
		evs := make([]*persistence.Event, n)
		for i := range evs {
			evs[i] = &persistence.Event{SessionID: id, Turn: &turn, Kind: persistence.KindOutput, Stream: "stdout",
				Data: fmt.Sprintf("%08d\n", done+i+1)}
		}
		if err := db.LogAppend(ctx, evs); err != nil {
			return nil, err
		}
		done += n
	}
	r.set("insert_s", time.Since(t0).Seconds())
	if err := pgExec(ctx, srv.DBURL, "ANALYZE agent_session_logs"); err != nil {
		return nil, err
	}
	rows, err := db.EventsAfter(ctx, id, 0, 1<<30)
	if err != nil {
		return nil, err
	}
	total := len(rows)
	rows = nil
	tr := newTransports(1)[0]
	srv.Prioritize()
	cpu0 := srv.sampleCPU()
	start := time.Now()
	s, err := Subscribe(ctx, tr, srv.Base, srv.Key, id, 0)
	if err != nil {
		return nil, err
	}
	<-s.Done
	el := time.Since(start)
	cpu1 := srv.sampleCPU()
	if t, _ := s.Terminal.Load().(string); !strings.Contains(t, "exit") {
		e, _ := s.Err.Load().(error)
		return nil, fmt.Errorf("replay ended with %q: %v", t, e)
	}
	got := s.Outputs.Load()
	r.set("log_rows", total)
	r.set("outputs_read", got)
	r.set("replay_s", el.Seconds())
	r.set("server_sched_run_s", (cpu1.run - cpu0.run).Seconds())
	r.set("server_sched_wait_s", (cpu1.wait - cpu0.wait).Seconds())
	r.set("events_per_s", float64(got)/el.Seconds())
	r.set("server_cpu_s", (cpu1.aod - cpu0.aod).Seconds())
	r.set("postgres_cpu_s", (cpu1.pg - cpu0.pg).Seconds())
	if got < int64(o.replayEvents) {
		r.note("read %d outputs, inserted %d", got, o.replayEvents)
	}
	serverProblems(ctx, srv, r)
	return r, nil
}
