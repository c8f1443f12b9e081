package app

// The black-box random-request test of issue 9 (docs/reliability.md):
// random requests, raw over TCP so nothing is sanitised on the way,
// against a real in-process node. Pass: no response ≥ 500, no crash, no
// hang (a request without a response head within blackboxDeadline is a
// failure). A seeded PRNG makes runs reproducible: the seed is printed
// and AOD_BLACKBOX_SEED replays it; each failure prints its request.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
)

// blackboxDeadline bounds one request: connect, send, response head.
const blackboxDeadline = 15 * time.Second

// blackboxCount is the number of requests per database: on Postgres
// 20,000 by default, 5,000 under -race (make test: the race detector makes
// each request ~10× dearer), 1,000,000 under soak; AOD_BLACKBOX_COUNT
// overrides all three. SQLite, one connection and a pure-Go engine, gets
// a quarter.
func blackboxCount(t *testing.T, d migrations.Dialect) int {
	n := 20_000
	if raceDetector {
		n = 5_000
	}
	if soak() {
		n = 1_000_000
	}
	if v := os.Getenv("AOD_BLACKBOX_COUNT"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "AOD_BLACKBOX_COUNT")
	}
	if d == migrations.SQLite {
		n /= 4
	}
	return n
}

func blackboxSeed(t *testing.T) uint64 {
	if v := os.Getenv("AOD_BLACKBOX_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "AOD_BLACKBOX_SEED")
		return s
	}
	return uint64(time.Now().UnixNano())
}

// bbTarget is what the generator knows about the node: several users
// (lists stay short), each with a few real rows. A row a request deleted
// is replaced, so the run keeps reaching real rows.
type bbTarget struct {
	n     *node
	addr  string
	mu    sync.Mutex
	users []*bbUser
}

// bbUser is one user's key and rows, by kind ("agent", "env", "session")
// and slot.
type bbUser struct {
	key  string
	rows map[string][]string
}

const bbSlots = 3

// newRow creates a row of kind for user u through the API.
func (tg *bbTarget) newRow(u *bbUser, kind string) (string, error) {
	do := func(path string, body any, want int) (string, error) {
		b, _ := json.Marshal(body)
		req, err := http.NewRequest("POST", tg.n.base+path, bytes.NewReader(b))
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+u.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return "", err
		}
		id, _ := m["id"].(string)
		if resp.StatusCode != want || id == "" {
			return "", fmt.Errorf("POST %s: %d %v", path, resp.StatusCode, m)
		}
		return id, nil
	}
	agentBody := map[string]any{"name": "bb", "provider": "anthropic", "model": "m"}
	switch kind {
	case "agent":
		return do("/agents", agentBody, 201)
	case "env":
		return do("/environments", map[string]any{"name": "bb-" + persistence.NewUUID()}, 201)
	}
	agent, err := do("/agents", agentBody, 201)
	if err != nil {
		return "", err
	}
	return do("/sessions", map[string]any{"agent_id": agent, "prompt": "hi"}, 202)
}

// replace swaps a deleted row for a new one.
func (tg *bbTarget) replace(ui int, kind string, id string) error {
	tg.mu.Lock()
	u := tg.users[ui]
	slot := -1
	for i, v := range u.rows[kind] {
		if v == id {
			slot = i
		}
	}
	tg.mu.Unlock()
	if slot < 0 {
		return nil
	}
	fresh, err := tg.newRow(u, kind)
	if err != nil {
		return fmt.Errorf("replace a deleted %s: %w", kind, err)
	}
	tg.mu.Lock()
	u.rows[kind][slot] = fresh
	tg.mu.Unlock()
	return nil
}

// bbRequest is one generated request, kept raw.
type bbRequest struct {
	index int
	raw   []byte
	// nul marks a request whose body carries a NUL character (defect 10:
	// such 500s are counted apart).
	nul bool
	// halfClose sends EOF after the request (declared body longer than
	// sent): the server may close without answering.
	halfClose bool
	// user, deletes and deleted say whose row a DELETE targets, so a
	// worker can replace it when it is gone.
	user          int
	deletes, kind string
}

func (r *bbRequest) String() string {
	raw := r.raw
	if len(raw) > 2048 {
		raw = append(raw[:2048:2048], []byte(fmt.Sprintf("…(%d bytes)", len(r.raw)))...)
	}
	return fmt.Sprintf("request #%d:\n%q", r.index, raw)
}

// bbResult is what became of one request.
type bbResult struct {
	status int
	// closed: the server closed the connection without a response.
	closed bool
	err    error
}

// TestBlackBoxRandomRequests sends blackboxCount random requests over every
// route, on Postgres and on SQLite. Pass: zero responses ≥ 500 (500s for a
// NUL in a body are reported apart, as defect 10, and fail too), no
// request left without a response head for blackboxDeadline, and the node
// still healthy at the end.
func TestBlackBoxRandomRequests(t *testing.T) {
	t.Parallel()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			runBlackBox(t, d)
		})
	}
}

func runBlackBox(t *testing.T, d migrations.Dialect) {
	n := startNode(t, nodeOpts{dialect: d, backend: backendMem, env: map[string]string{
		"AOD_DEV_PUBLISH": "true", "DEFAULT_MAX_CONCURRENT_SESSIONS": "1000",
		// The test is about input, not overload: under -race on a shared
		// 2-vCPU machine SQLite's single connection can queue a request
		// past the default 5 s, which would answer 503 (10 s stays inside the
		// 15 s client deadline that counts a hang).
		"AOD_DB_TIMEOUT": "10s",
	}})
	tg := &bbTarget{n: n, addr: strings.TrimPrefix(n.base, "http://")}
	ctx := t.Context()
	for i := 0; i < 8; i++ {
		key := n.key
		if i > 0 {
			u, err := n.app.DB().UserCreate(ctx, "bb-"+persistence.NewUUID())
			require.NoError(t, err)
			key, _, err = n.app.DB().APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID})
			require.NoError(t, err)
		}
		u := &bbUser{key: key, rows: map[string][]string{}}
		for _, kind := range []string{"agent", "env", "session"} {
			for j := 0; j < bbSlots; j++ {
				id, err := tg.newRow(u, kind)
				require.NoError(t, err)
				u.rows[kind] = append(u.rows[kind], id)
			}
		}
		tg.users = append(tg.users, u)
	}
	for _, u := range tg.users {
		as := *n
		as.key = u.key
		for _, id := range u.rows["session"] {
			as.waitDone(id, time.Minute)
		}
	}

	count, seed := blackboxCount(t, d), blackboxSeed(t)
	t.Logf("black box on %s: %d requests, seed %d (AOD_BLACKBOX_SEED=%d replays it)", d, count, seed, seed)
	const workers = 8
	var (
		next                                    atomic.Int64
		statuses                                [600]atomic.Int64
		closedNoResp, nul500, hangs, clientErrs atomic.Int64
		mu                                      sync.Mutex
		failures                                []string
	)
	fail := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, msg)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				if step := max(count/10, 1); i > 0 && i%step == 0 {
					t.Logf("black box on %s: %d/%d requests after %s", d, i, count, time.Since(start).Round(time.Second))
				}
				req := tg.generate(seed, i)
				res := bbSend(tg.addr, req)
				switch {
				case res.err != nil && isTimeoutErr(res.err):
					hangs.Add(1)
					fail(fmt.Sprintf("no response within %s (seed %d) %s", blackboxDeadline, seed, req))
				case res.err != nil:
					clientErrs.Add(1)
					fail(fmt.Sprintf("client error %v (seed %d) %s", res.err, seed, req))
				case res.closed:
					closedNoResp.Add(1)
					if !req.halfClose {
						fail(fmt.Sprintf("connection closed without a response (seed %d) %s", seed, req))
					}
				default:
					statuses[min(res.status, 599)].Add(1)
					if req.deletes != "" && (res.status == 200 || res.status == 204) {
						if err := tg.replace(req.user, req.kind, req.deletes); err != nil {
							clientErrs.Add(1)
							fail(err.Error())
						}
					}
					if res.status >= 500 {
						if req.nul && res.status == 500 {
							nul500.Add(1)
						}
						fail(fmt.Sprintf("status %d (seed %d, NUL in body: %v) %s", res.status, seed, req.nul, req))
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	var byStatus []string
	var ge500 int64
	for s := range statuses {
		if c := statuses[s].Load(); c > 0 {
			byStatus = append(byStatus, fmt.Sprintf("%d×%d", s, c))
			if s >= 500 {
				ge500 += c
			}
		}
	}
	t.Logf("black box on %s: %d requests in %s (%.0f req/s); statuses %s; closed without response (truncated bodies) %d; ≥500 %d (of which NUL-in-body 500s, defect 10: %d); hangs %d; client errors %d",
		d, count, took.Round(time.Millisecond), float64(count)/took.Seconds(), strings.Join(byStatus, " "),
		closedNoResp.Load(), ge500, nul500.Load(), hangs.Load(), clientErrs.Load())
	for _, f := range failures {
		t.Log(f)
	}
	h := n.do("GET", "/health", nil)
	require.Equal(t, 200, h.status, "the node is healthy after the run: %s", h.body)
	require.Zero(t, ge500-nul500.Load(), "responses ≥ 500 other than NUL-in-body 500s")
	require.Zero(t, nul500.Load(), "NUL-in-body 500s (defect 10: NUL must be a 422)")
	require.Zero(t, hangs.Load(), "requests without a response head within %s", blackboxDeadline)
	require.Zero(t, clientErrs.Load(), "client errors")
	require.Empty(t, failures)
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// bbSend writes req on a fresh connection and reads the response head.
// A text/event-stream 200 is not read further (streams may stay open).
func bbSend(addr string, req *bbRequest) bbResult {
	c, err := net.DialTimeout("tcp", addr, blackboxDeadline)
	if err != nil {
		return bbResult{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(blackboxDeadline))
	if _, err := c.Write(req.raw); err != nil {
		// The server may answer and close before reading everything (413).
		if !isTimeoutErr(err) {
			return readHead(c)
		}
		return bbResult{err: err}
	}
	if req.halfClose {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	return readHead(c)
}

func readHead(c net.Conn) bbResult {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if isTimeoutErr(err) {
			return bbResult{err: err}
		}
		return bbResult{closed: true}
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
	}
	return bbResult{status: resp.StatusCode}
}

// bbRoute is one route template; ":id" is filled from the id pool.
type bbRoute struct {
	path    string
	methods []string
	body    func(tg *bbTarget, r *rand.Rand, ui int) map[string]any
}

var bbRoutes = []bbRoute{
	{"/health", []string{"GET"}, nil},
	{"/metrics", []string{"GET"}, nil},
	{"/agents", []string{"GET", "POST"}, bbAgentBody},
	{"/agents/:agent", []string{"GET", "PUT"}, bbAgentUpdateBody},
	{"/agents/:agent/archive", []string{"POST"}, nil},
	{"/agents/:agent/versions", []string{"GET"}, nil},
	{"/environments", []string{"GET", "POST"}, bbEnvBody},
	{"/environments/:env", []string{"GET", "PUT"}, bbEnvUpdateBody},
	{"/environments/:env/archive", []string{"POST"}, nil},
	{"/environments/:env/delete", []string{"DELETE"}, nil},
	{"/environments/:env/versions", []string{"GET"}, nil},
	{"/sessions", []string{"GET", "POST"}, bbSessionBody},
	{"/sessions/:session", []string{"GET"}, nil},
	{"/sessions/:session/prompt", []string{"POST"}, bbPromptBody},
	{"/sessions/:session/turns", []string{"GET"}, nil},
	{"/sessions/:session/terminate", []string{"POST"}, nil},
	{"/sessions/:session/delete", []string{"DELETE"}, nil},
	{"/sessions/:session/stream", []string{"GET"}, nil},
	{"/dev/sessions/:session/output", []string{"POST"}, nil},
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func slicesClone(xs []string) []string { return append([]string(nil), xs...) }

// bbString is a random string: plain, unicode, control characters, NUL,
// huge, or empty.
func bbString(r *rand.Rand) string {
	switch r.IntN(12) {
	case 0:
		return ""
	case 1:
		return "a\x00b"
	case 2:
		if r.IntN(20) == 0 {
			return strings.Repeat("x", 1<<20)
		}
		return strings.Repeat("x", 1+r.IntN(20_000))
	case 3:
		return "héllo wörld ✓ 🚀 中文 ‮rtl‬"
	case 4:
		return "\x01\x02\x1f\x7f\t\r\n"
	case 5:
		return "\ufeff\u200b\ufffd"
	case 6:
		return "../../etc/passwd"
	case 7:
		return "'; DROP TABLE agents; --"
	case 8:
		return "${HOME} $(id) `id`"
	case 9:
		return strings.Repeat("🚀", 1+r.IntN(2000))
	}
	return fmt.Sprintf("s%d", r.IntN(1000))
}

// bbValue is a random JSON value of any type.
func bbValue(r *rand.Rand, depth int) any {
	switch r.IntN(14) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return r.IntN(100) - 50
	case 3:
		return pick(r, []any{1e308, -1e308, 9223372036854775807, -9223372036854775808, 18446744073709551615.0, 0.5, -0.0})
	case 4:
		if depth < 3 {
			arr := make([]any, r.IntN(4))
			for i := range arr {
				arr[i] = bbValue(r, depth+1)
			}
			return arr
		}
	case 5:
		if depth < 3 {
			m := map[string]any{}
			for i := r.IntN(4); i > 0; i-- {
				m[bbString(r)] = bbValue(r, depth+1)
			}
			return m
		}
	case 6:
		return persistence.NewUUID()
	}
	return bbString(r)
}

// id picks an id for a path: mostly one of user ui's rows of kind, else
// another user's (404), a random or malformed one.
func (tg *bbTarget) id(r *rand.Rand, ui int, kind string) string {
	tg.mu.Lock()
	owner := ui
	if r.IntN(10) == 0 {
		owner = r.IntN(len(tg.users))
	}
	real := slicesClone(tg.users[owner].rows[kind])
	tg.mu.Unlock()
	switch r.IntN(20) {
	case 0, 1:
		return persistence.NewUUID()
	case 2:
		return strings.ToUpper(pick(r, real))
	case 3:
		return pick(r, []string{"", "0", "-1", "null", "..", "%2e%2e", "x%00y", "%ff%fe", "00000000-0000-0000-0000-000000000000"})
	case 4:
		return strings.Repeat("a", 1+r.IntN(9000))
	case 5:
		return pick(r, real) + pick(r, []string{"/", "//", "/..", "%20", ";x"})
	}
	return pick(r, real)
}

func bbAgentBody(tg *bbTarget, r *rand.Rand, ui int) map[string]any {
	b := map[string]any{"name": "bb", "provider": pick(r, []string{"anthropic", "openai", "google", "x"}), "model": "m"}
	if r.IntN(3) == 0 {
		b["system"] = bbString(r)
	}
	if r.IntN(4) == 0 {
		b["environment_id"] = tg.id(r, ui, "env")
	}
	if r.IntN(5) == 0 {
		b["skills"] = []any{map[string]any{"name": bbString(r), "description": "d", "content": bbString(r)}}
	}
	if r.IntN(5) == 0 {
		b["mcp_servers"] = []any{map[string]any{"name": "m", "url": "https://x.test", "headers": map[string]any{"A": bbString(r)}}}
	}
	if r.IntN(6) == 0 {
		b["runtime"] = pick(r, []string{"claude", "codex", "gemini", "opencode", "nope"})
	}
	if r.IntN(6) == 0 {
		b["metadata"] = bbValue(r, 0)
	}
	return b
}

func bbAgentUpdateBody(tg *bbTarget, r *rand.Rand, ui int) map[string]any {
	b := bbAgentBody(tg, r, ui)
	b["version"] = pick(r, []any{1, 2, 0, -1, "1", nil, 1e20})
	return b
}

func bbEnvBody(tg *bbTarget, r *rand.Rand, ui int) map[string]any {
	b := map[string]any{"name": "bb"}
	if r.IntN(3) == 0 {
		b["packages"] = map[string]any{pick(r, []string{"apt", "npm", "pip", "cargo", "gem", "go", "brew"}): []any{bbString(r)}}
	}
	if r.IntN(3) == 0 {
		b["env_vars"] = map[string]any{pick(r, []string{"A", "1B", "PATH", "a b", ""}): bbValue(r, 1)}
	}
	if r.IntN(4) == 0 {
		b["networking"] = map[string]any{"type": pick(r, []any{"unrestricted", "limited", "x", 1}), "allowed_hosts": bbValue(r, 1)}
	}
	if r.IntN(4) == 0 {
		b["setup_script"] = bbString(r)
	}
	return b
}

func bbEnvUpdateBody(tg *bbTarget, r *rand.Rand, ui int) map[string]any {
	b := bbEnvBody(tg, r, ui)
	b["version"] = pick(r, []any{1, 2, 0, -1, "1", nil})
	return b
}

func bbSessionBody(tg *bbTarget, r *rand.Rand, ui int) map[string]any {
	b := map[string]any{"agent_id": tg.id(r, ui, "agent"), "prompt": "hi"}
	if r.IntN(3) == 0 {
		b["prompt"] = bbString(r)
	}
	if r.IntN(3) == 0 {
		b["timeout"] = pick(r, []any{10, 9, 3600, 3601, "600", 600.5, nil, -1, 1e30})
	}
	if r.IntN(4) == 0 {
		b["environment_id"] = pick(r, []any{tg.id(r, ui, "env"), nil, ""})
	}
	if r.IntN(4) == 0 {
		b["resources"] = []any{map[string]any{"type": "github_repository", "url": pick(r, []string{"https://github.com/a/b", "http://x", bbString(r)}),
			"mount_path": pick(r, []any{"/workspace/x", "rel", "/", nil, bbString(r)}), "authorization_token": bbValue(r, 1)}}
	}
	if r.IntN(4) == 0 {
		b["secret_env_vars"] = map[string]any{pick(r, []string{"TOKEN", "1X", ""}): bbValue(r, 1)}
	}
	return b
}

func bbPromptBody(tg *bbTarget, r *rand.Rand, ui int) map[string]any {
	b := map[string]any{"prompt": "again"}
	if r.IntN(2) == 0 {
		b["prompt"] = bbString(r)
	}
	if r.IntN(3) == 0 {
		b["timeout"] = bbValue(r, 1)
	}
	return b
}

// mutate breaks a valid body: drop a key, change a value's type, add
// unknown keys.
func mutate(r *rand.Rand, b map[string]any) {
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	for i := r.IntN(3); i > 0 && len(keys) > 0; i-- {
		k := pick(r, keys)
		switch r.IntN(3) {
		case 0:
			delete(b, k)
		default:
			b[k] = bbValue(r, 0)
		}
	}
	if r.IntN(4) == 0 {
		b[bbString(r)] = bbValue(r, 0)
	}
}

// bodyBytes renders body as JSON or as something that is not quite JSON.
func bodyBytes(r *rand.Rand, body map[string]any) []byte {
	j, err := json.Marshal(body)
	if err != nil {
		j = []byte(`{}`)
	}
	mangle := -1
	if r.IntN(4) == 0 {
		mangle = r.IntN(6)
	}
	switch mangle {
	case 0:
		return j[:r.IntN(len(j)+1)] // truncated
	case 1:
		return []byte(pick(r, []string{"", "null", "[]", "1", `"x"`, "{", "}", "{,}", `{"a":1,}`, "\x00", "\xff\xfe{", `{"a":NaN}`, `{"a":1e999}`, `{"prompt":"\ud800"}`}))
	case 2:
		return append(bytes.Repeat([]byte("["), 20000), bytes.Repeat([]byte("]"), 20000)...)
	case 3:
		return append(j, pick(r, []string{" x", "\x00", "}", " {}"})...)
	case 4:
		junk := make([]byte, r.IntN(2048))
		for i := range junk {
			junk[i] = byte(r.IntN(256))
		}
		return junk
	case 5:
		// A duplicate key with another type.
		if len(j) > 2 {
			return append([]byte(`{"name":[1],`), j[1:]...)
		}
	}
	return j
}

// generate builds request i of the run from (seed, i) alone.
func (tg *bbTarget) generate(seed uint64, i int) *bbRequest {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	route := pick(r, bbRoutes)
	method := pick(r, route.methods)
	if r.IntN(10) == 0 {
		method = pick(r, []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get"})
	}
	ui := r.IntN(len(tg.users))
	req := &bbRequest{index: i, user: ui}
	path := route.path
	for _, kind := range []string{"agent", "env", "session"} {
		if strings.Contains(path, ":"+kind) {
			id := tg.id(r, ui, kind)
			path = strings.ReplaceAll(path, ":"+kind, id)
			if method == "DELETE" || strings.HasSuffix(route.path, "/delete") {
				req.deletes, req.kind = id, kind
			}
		}
	}
	trick := -1
	if r.IntN(4) == 0 {
		trick = r.IntN(10)
	}
	switch trick {
	case 0:
		path += "/"
	case 1:
		path = "/" + path
	case 2:
		path = strings.Replace(path, "/", "/./", 1)
	case 3:
		path = "/x/.." + path
	case 4:
		path = strings.ReplaceAll(path, "/", "%2f")
	case 5:
		path = strings.Replace(path, "s", "%73", 1)
	case 6:
		path += "/" + strings.Repeat("a", r.IntN(12000))
	case 7:
		path = "/%2e%2e" + path
	case 8:
		path += "%00"
	case 9:
		path += "/\u00e9\u00e8"
	}
	if r.IntN(4) == 0 {
		path += "?" + pick(r, []string{"since=", "since=-1", "since=abc", "since=1e3", "since=99999999999999999999999", "since=0x10",
			"since=%00", "since=1&since=2", "a=b&&&c", "since=" + strconv.Itoa(r.IntN(1000)), "%zz"})
	}
	var hdr []string
	tg.mu.Lock()
	key := tg.users[ui].key
	tg.mu.Unlock()
	auth := 99
	if r.IntN(5) == 0 {
		auth = r.IntN(8)
	}
	switch auth {
	case 0:
	case 1:
		hdr = append(hdr, "Authorization: Bearer")
	case 2:
		hdr = append(hdr, "Authorization: bearer "+key)
	case 3:
		hdr = append(hdr, "Authorization: Basic YTpi")
	case 4:
		hdr = append(hdr, "Authorization: Bearer "+key+"x")
	case 5:
		hdr = append(hdr, "Authorization: Bearer "+strings.Repeat("k", r.IntN(10000)))
	case 6:
		hdr = append(hdr, "Authorization: Bearer  "+key+" ", "Authorization: Bearer nope")
	case 7:
		hdr = append(hdr, "Authorization: Bearer \xff\xfe")
	default:
		hdr = append(hdr, "Authorization: Bearer "+key)
	}
	if r.IntN(3) == 0 {
		hdr = append(hdr, "Last-Event-ID: "+pick(r, []string{"", "abc", "-1", "0", "1", "99999999999999999999999", "1.5", "\xff", " 7", strconv.Itoa(r.IntN(500))}))
	}
	var body []byte
	nul := false
	if method == "POST" || method == "PUT" || method == "PATCH" || r.IntN(10) == 0 {
		b := map[string]any{}
		if route.body != nil {
			b = route.body(tg, r, ui)
		} else {
			b["x"] = bbValue(r, 0)
		}
		if r.IntN(3) == 0 {
			mutate(r, b)
		}
		body = bodyBytes(r, b)
		nul = bytes.Contains(body, []byte(`\u0000`))
		switch r.IntN(8) {
		case 0:
		case 1:
			hdr = append(hdr, "Content-Type: text/plain")
		case 2:
			hdr = append(hdr, "Content-Type: application/json; charset=latin1")
		case 3:
			hdr = append(hdr, "Content-Type: multipart/form-data; boundary=x")
		default:
			hdr = append(hdr, "Content-Type: application/json")
		}
	}
	req.nul = nul
	cl := len(body)
	framing := -1
	if r.IntN(10) == 0 {
		framing = r.IntN(4)
	}
	switch framing {
	case 0:
		cl += 1 + r.IntN(100) // declared longer than sent
		req.halfClose = true
	case 1:
		cl = max(0, cl-1-r.IntN(10)) // declared shorter: the rest is garbage
	case 2:
		hdr = append(hdr, "Content-Length: "+pick(r, []string{"-1", "abc", "99999999999999999999"}))
		cl = -1
	case 3:
		hdr = append(hdr, "Transfer-Encoding: chunked")
		body = []byte(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body))
		cl = -1
	}
	if cl >= 0 {
		hdr = append(hdr, "Content-Length: "+strconv.Itoa(cl))
	}
	if r.IntN(20) == 0 {
		hdr = append(hdr, "X-Junk: "+strings.Repeat("j", r.IntN(20000)))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, tg.addr)
	for _, h := range hdr {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	req.raw = b.Bytes()
	return req
}

// TestBlackBoxDeleteRacesReference replays a race the black box found:
// an environment deleted between the check that it exists and the insert
// of an agent or session that references it. Pass: the late request
// answers 404 "Environment not found" (as it would a moment later), never
// a 500 from the foreign key.
func TestBlackBoxDeleteRacesReference(t *testing.T) {
	t.Parallel()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOpts{dialect: d, backend: backendMem})
			agent := n.agent(nil)
			iterations := 150
			statuses := map[string]int{}
			for i := 0; i < iterations; i++ {
				env := n.mustCreate("/environments", map[string]any{"name": fmt.Sprintf("race-%d", i)}, 201)["id"].(string)
				var wg sync.WaitGroup
				var del, ref int
				var refBody []byte
				var delErr, refErr error
				wg.Add(2)
				go func() {
					defer wg.Done()
					del, _, delErr = n.doTimeout("DELETE", "/environments/"+env+"/delete", nil, 30*time.Second)
				}()
				go func() {
					defer wg.Done()
					if i%2 == 0 {
						ref, refBody, refErr = n.doTimeout("POST", "/agents", map[string]any{"name": "r", "provider": "anthropic", "model": "m", "environment_id": env}, 30*time.Second)
					} else {
						ref, refBody, refErr = n.doTimeout("POST", "/sessions", map[string]any{"agent_id": agent, "prompt": "p", "environment_id": env}, 30*time.Second)
					}
				}()
				wg.Wait()
				require.NoError(t, delErr)
				require.NoError(t, refErr)
				statuses[fmt.Sprintf("delete %d / reference %d", del, ref)]++
				require.Less(t, ref, 500, "the reference racing the delete: %s", refBody)
				require.Less(t, del, 500)
				if ref == 404 {
					require.JSONEq(t, `{"detail":"Environment not found"}`, string(refBody))
				}
			}
			t.Logf("%s: %v", d, statuses)
		})
	}
}
