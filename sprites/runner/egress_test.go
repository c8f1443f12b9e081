package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/egress"
)

// countingListener accepts TCP connections on addr, answers "pong" and
// counts them. A connection the sandbox should not have made shows up in
// the count even if the sandbox's side of it failed later.
type countingListener struct {
	ln       net.Listener
	accepted atomic.Int64
}

func listenCounting(t *testing.T, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	c := &countingListener{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			_, _ = conn.Write([]byte("pong\n"))
			conn.Close()
		}
	}()
	return c
}

func (c *countingListener) port() string { return strconv.Itoa(c.ln.Addr().(*net.TCPAddr).Port) }

// tcpProbe is a bash script that connects to host:port, prints what the
// peer says and exits 0, or prints bash's error and exits non-zero.
func tcpProbe(host, port string) Spec {
	return Spec{Argv: []string{"timeout", "5", "bash", "-c",
		`exec 3<>/dev/tcp/` + host + `/` + port + ` || exit 7; head -n1 <&3`}}
}

func TestEgressUnrestricted(t *testing.T) {
	t.Parallel()
	ip := hostIPv4(t)
	ln := listenCounting(t, "0.0.0.0:0")
	b := setup(t, NetworkPrivate)

	// A sandbox on the host's network (AOD_LOCAL_NETWORK=host) listening on
	// all interfaces: another sandbox's service.
	other := setup(t, NetworkHost)
	otherPort := strconv.Itoa(freePort(t))
	srv, err := other.r.Start(t.Context(), other.name, Spec{Argv: []string{"python3", "-c",
		`import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", ` + otherPort + `)); s.listen(); print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"other-sandbox\n"); c.close()`}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.stop(t.Context()) })
	waitOutput(t, srv, "listening")

	// The filter is in place before anything leaves the machine: the
	// off-machine probes below must never run unfiltered.
	ns := execNetns(t, b.r, b.name)
	before, err := egressCounters(ns)
	require.NoError(t, err, "no egress filter in the unrestricted exec's network namespace")
	for _, p := range egress.Blocked() {
		require.Contains(t, before, p.String(), "no rule for %s", p)
	}
	require.Contains(t, before, ip+"/32", "no rule for the host's own address")
	require.Contains(t, before, "slirp dns")

	for _, tt := range []struct{ what, host, port string }{
		{"the host's non-loopback address", ip, ln.port()},
		{"127.0.0.1 (must be the sandbox's own loopback)", "127.0.0.1", ln.port()},
		{"slirp's gateway 10.0.2.2", "10.0.2.2", ln.port()},
		{"another sandbox's listener via the host address", ip, otherPort},
		{"another sandbox's listener via 10.0.2.2", "10.0.2.2", otherPort},
	} {
		res := run(t, b.r, b.name, tcpProbe(tt.host, tt.port))
		require.NotEqual(t, 0, res.code, "unrestricted sandbox reached %s (%s:%s): stdout %q", tt.what, tt.host, tt.port, res.stdout)
	}
	require.Zero(t, ln.accepted.Load(), "the host listener on 0.0.0.0:%s accepted connections from the sandbox", ln.port())

	// Addresses off this machine: each attempt is rejected inside the
	// namespace by its range's rule (the counter moves), so it fails at
	// once and nothing is sent out. Each exec has its own namespace: the
	// probes run in one exec, whose counters are read while it waits.
	probes := []struct{ host, rule string }{
		{"169.254.169.254", "169.254.0.0/16"},
		{"10.20.30.40", "10.0.0.0/8"},
		{"172.16.0.1", "172.16.0.0/12"},
		{"192.168.1.1", "192.168.0.0/16"},
		{"100.64.0.1", "100.64.0.0/10"},
		{"10.0.2.3", "10.0.0.0/8"}, // slirp's DNS, but not port 53
		{ip, ip + "/32"},
	}
	var script strings.Builder
	for i, pr := range probes {
		// The filter's counters must be read before anything could leave:
		// wait for the test's go-ahead (a file) before the off-machine ones.
		if i == 0 {
			script.WriteString("echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done\n")
		}
		fmt.Fprintf(&script, "s=$(date +%%s%%N); timeout 5 bash -c 'exec 3<>/dev/tcp/%s/80' 2>/dev/null; echo \"%s $? $(( ($(date +%%s%%N)-s)/1000000 ))\"\n", pr.host, pr.host)
	}
	script.WriteString("echo done; exec sleep 60\n")
	p, err := b.r.Start(t.Context(), b.name, Spec{Argv: []string{"bash", "-c", script.String()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.stop(context.Background()) })
	waitOutput(t, p, "ready")
	pns := execNetnsOf(t, p)
	was, err := egressCounters(pns)
	require.NoError(t, err, "no egress filter: not sending probes off the machine")
	require.NoError(t, b.r.WriteFile(b.name, "/tmp/go", nil, 0o644))
	out := waitOutput(t, p, "done")
	t.Logf("probes: %s", out)
	now, err := egressCounters(pns)
	require.NoError(t, err)
	results := map[string][2]int{}
	for _, line := range strings.Split(out, "\n") {
		var host string
		var code, ms int
		if n, _ := fmt.Sscanf(line, "%s %d %d", &host, &code, &ms); n == 3 {
			results[host] = [2]int{code, ms}
		}
	}
	for _, pr := range probes {
		res, ok := results[pr.host]
		require.True(t, ok, "no result for %s in %q", pr.host, out)
		require.NotEqual(t, 0, res[0], "unrestricted sandbox connected to %s:80", pr.host)
		require.Less(t, res[1], 3000, "connection to %s:80 took %d ms: not rejected at once", pr.host, res[1])
	}
	want := map[string]uint64{}
	for _, pr := range probes {
		want[pr.rule]++
	}
	for rule, n := range want {
		require.GreaterOrEqual(t, now[rule]-was[rule], n, "the %s rule did not reject the probes to its range (counters before %v, after %v)", rule, was, now)
	}
}

// TestEgressFilterImmutable tries, from inside an unrestricted sandbox, to
// change the filter, the routes and the links of its namespace.
func TestEgressFilterImmutable(t *testing.T) {
	t.Parallel()
	needTools(t, "nft", "iptables", "ip", "unshare")
	ip := hostIPv4(t)
	ln := listenCounting(t, "0.0.0.0:0")
	b := setup(t, NetworkPrivate)
	p, err := b.r.Start(t.Context(), b.name, Spec{Argv: []string{"bash", "-c", `
		try() { out=$("$@" 2>&1); echo "$* => $? $out"; }
		try nft flush ruleset
		try nft delete table ip ` + egressTable + `
		try iptables -F
		try iptables -P OUTPUT ACCEPT
		try ip route del default
		try ip link set tap0 down
		try ip addr add 192.0.2.77/32 dev lo
		try unshare -n true
		exec 3<>/dev/tcp/` + ip + `/` + ln.port() + ` && echo "host reached" || echo "host not reached"
		echo done
		exec sleep 60`}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.stop(context.Background()) })
	out := waitOutput(t, p, "done")
	t.Logf("attempts inside:\n%s", out)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if cmd, rest, ok := strings.Cut(line, " => "); ok {
			require.False(t, strings.HasPrefix(rest, "0 "), "%q succeeded inside the sandbox: %s", cmd, line)
		}
	}
	require.Contains(t, out, "host not reached\n")
	require.Zero(t, ln.accepted.Load())
	// The rules are all still there.
	counters, err := egressCounters(execNetnsOf(t, p))
	require.NoError(t, err)
	for _, pf := range egress.Blocked() {
		require.Contains(t, counters, pf.String())
	}
}

func TestEgressAllowList(t *testing.T) {
	t.Parallel()
	needTools(t, "curl")
	ip := hostIPv4(t)
	ln := listenCounting(t, "0.0.0.0:0")
	srv := httpTestServer(t)
	hosts := map[string]string{}
	for _, h := range []string{"allowed.test", "a.wild.test", "b.c.wild.test", "wild.test", "a.wild.test.evil", "notallowed.test"} {
		hosts[h] = srv.addr
	}
	r, err := New(Config{Dir: t.TempDir(), Network: NetworkPrivate, Logger: testLogger(t), EgressHosts: hosts})
	require.NoError(t, err)
	name := randomName(t)
	createSandbox(t, r, name)
	require.NoError(t, r.SetPolicy(name, sprites.NetworkPolicy{Rules: []sprites.Rule{
		{Domain: "allowed.test", Action: "allow"}, {Domain: "*.wild.test", Action: "allow"},
		{Domain: "localhost", Action: "allow"}, {Domain: "*", Action: "deny"}}}))

	curl := func(args ...string) result {
		return run(t, r, name, Spec{Argv: append([]string{"curl", "-sS", "-f", "--max-time", "10"}, args...)})
	}
	for _, tt := range []struct {
		what string
		args []string
		host string // answering Host, "" when it must fail
	}{
		{"HTTP CONNECT to an allowed name", []string{"-p", "http://allowed.test:8080/x"}, "allowed.test:8080"},
		{"SOCKS5 to an allowed name", []string{"--socks5-hostname", ProxyAddr, "http://allowed.test/x"}, "allowed.test"},
		{"forwarded HTTP to an allowed name", []string{"http://allowed.test/x"}, "allowed.test"},
		{"CONNECT to a wildcard name", []string{"-p", "http://a.wild.test/x"}, "a.wild.test"},
		{"SOCKS5 to a deeper wildcard name", []string{"--socks5-hostname", ProxyAddr, "http://b.c.wild.test/x"}, "b.c.wild.test"},
		{"CONNECT to a name not allowed", []string{"-p", "http://notallowed.test/x"}, ""},
		{"SOCKS5 to a name not allowed", []string{"--socks5-hostname", ProxyAddr, "http://notallowed.test/x"}, ""},
		{"forwarded HTTP to a name not allowed", []string{"http://notallowed.test/x"}, ""},
		{"the wildcard's apex", []string{"-p", "http://wild.test/x"}, ""},
		{"a wildcard mismatch", []string{"-p", "http://a.wild.test.evil/x"}, ""},
		{"CONNECT to a raw IP", []string{"-p", "http://" + srv.addr + "/x"}, ""},
		{"forwarded HTTP to a raw IP", []string{"http://" + srv.addr + "/x"}, ""},
		{"SOCKS5 to a raw IP", []string{"--socks5", ProxyAddr, "http://" + srv.addr + "/x"}, ""},
		{"an allowed name resolving to loopback (rebinding)", []string{"-p", "http://localhost:" + ln.port() + "/x"}, ""},
		{"no proxy: direct to the host", []string{"--noproxy", "*", "http://" + ip + ":" + ln.port() + "/x"}, ""},
	} {
		before := srv.requests.Load()
		res := curl(tt.args...)
		if tt.host == "" {
			require.NotEqual(t, 0, res.code, "%s succeeded: %+v", tt.what, res)
			require.Equal(t, before, srv.requests.Load(), "%s reached the test server", tt.what)
			continue
		}
		require.Equal(t, 0, res.code, "%s failed: %+v", tt.what, res)
		require.Equal(t, "hello "+tt.host+"\n", res.stdout, tt.what)
	}

	// Every other path is closed: raw TCP, DNS, any interface but lo.
	res := run(t, r, name, tcpProbe(ip, ln.port()))
	require.NotEqual(t, 0, res.code, "allow-list sandbox reached %s:%s directly: %q", ip, ln.port(), res.stdout)
	res = run(t, r, name, tcpProbe("10.0.2.2", ln.port()))
	require.NotEqual(t, 0, res.code, "allow-list sandbox reached 10.0.2.2:%s: %q", ln.port(), res.stdout)
	res = run(t, r, name, Spec{Argv: []string{"timeout", "5", "getent", "hosts", "deb.debian.org"}})
	require.NotEqual(t, 0, res.code, "allow-list sandbox resolved a name: %q", res.stdout)
	res = run(t, r, name, Spec{Argv: []string{"timeout", "5", "bash", "-c", "echo x > /dev/udp/10.0.2.3/53"}})
	require.NotEqual(t, 0, res.code, "allow-list sandbox sent a DNS packet: %+v", res)
	res = run(t, r, name, sh(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '`))
	require.Equal(t, "lo\n", res.stdout)
	res = run(t, r, name, sh(`env | grep -i _proxy= | sort`))
	require.Equal(t, strings.Join(slices.Sorted(slices.Values(proxyEnv())), "\n")+"\n", res.stdout)
	require.Zero(t, ln.accepted.Load(), "the host listener accepted a connection from the allow-list sandbox")
}

// TestEgressDenyAllStaysLoopbackOnly checks that a deny-all policy still
// gives no proxy and no route: only lo, nothing listening.
func TestEgressDenyAllStaysLoopbackOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkPrivate)
	require.NoError(t, b.r.SetPolicy(b.name, sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*", Action: "deny"}}}))
	res := run(t, b.r, b.name, sh(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; env | grep -ic _proxy=`))
	require.Equal(t, "lo\n0\n", res.stdout)
	res = run(t, b.r, b.name, tcpProbe("127.0.0.1", "3128"))
	require.NotEqual(t, 0, res.code, "something listens on the proxy port of a deny-all sandbox")
}

// testHTTPServer answers "hello <Host>" and counts requests.
type testHTTPServer struct {
	addr     string
	requests atomic.Int64
}

func httpTestServer(t *testing.T) *testHTTPServer {
	t.Helper()
	s := &testHTTPServer{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		fmt.Fprintf(w, "hello %s\n", r.Host)
	}))
	t.Cleanup(hs.Close)
	s.addr = hs.Listener.Addr().String()
	return s
}

// execNetns starts a long-running exec in the sandbox and returns the
// path of its network namespace.
func execNetns(t *testing.T, r *Runner, name string) string {
	t.Helper()
	p, err := r.Start(t.Context(), name, Spec{Argv: []string{"sleep", "120"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.stop(context.Background()) })
	return execNetnsOf(t, p)
}

func execNetnsOf(t *testing.T, p *Proc) string {
	t.Helper()
	rec, err := p.readPid()
	require.NoError(t, err)
	require.NotZero(t, rec.Init)
	return fmt.Sprintf("/proc/%d/ns/net", rec.Init)
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitOutput waits until p's stdout contains want.
func waitOutput(t *testing.T, p *Proc, want string) string {
	t.Helper()
	ctx, cancel := contextWithTestTimeout(t)
	defer cancel()
	var out []byte
	err := p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
		if ev.Exited {
			return errExitedEarly
		}
		out = append(out, ev.Data...)
		if ev.Stream == sprites.Stdout && containsLine(out, want) {
			return errFound
		}
		return nil
	})
	require.ErrorIs(t, err, errFound, "waiting for %q, got %q", want, out)
	return string(out)
}

var (
	errFound       = errors.New("found")
	errExitedEarly = errors.New("exited before the expected output")
)

func contextWithTestTimeout(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), testTimeout)
}

func containsLine(out []byte, line string) bool {
	return bytes.Contains(append([]byte("\n"), out...), []byte("\n"+line+"\n"))
}

// egressCounters reads the packet counters of the egress filter in the
// network namespace at path, by rule comment ("10.0.0.0/8", "slirp dns",
// ...; IPv4 and IPv6 rules). It fails when the filter is missing.
func egressCounters(path string) (map[string]uint64, error) {
	ns, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		t := &nftables.Table{Name: egressTable, Family: fam}
		rules, err := c.GetRules(t, &nftables.Chain{Name: "output", Table: t})
		if err != nil {
			return nil, fmt.Errorf("egress filter (family %d): %w", fam, err)
		}
		if len(rules) == 0 {
			return nil, fmt.Errorf("egress filter (family %d) has no rules", fam)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					out[comment] += ctr.Packets
				}
			}
			if _, ok := out[comment]; !ok {
				out[comment] = 0
			}
		}
	}
	return out, nil
}

// TestEgressRules checks the filter as installed in an unrestricted
// exec's namespace: the output chains accept by default (the internet),
// and no rule's range holds a public address.
func TestEgressRules(t *testing.T) {
	t.Parallel()
	b := setup(t, NetworkPrivate)
	ns, err := os.Open(execNetns(t, b.r, b.name))
	require.NoError(t, err)
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	require.NoError(t, err)
	chains, err := c.ListChains()
	require.NoError(t, err)
	var names []string
	for _, ch := range chains {
		names = append(names, fmt.Sprintf("%d/%s/%s", ch.Table.Family, ch.Table.Name, ch.Name))
		require.NotNil(t, ch.Policy)
		require.Equal(t, nftables.ChainPolicyAccept, *ch.Policy, "chain %s", ch.Name)
	}
	require.ElementsMatch(t, []string{
		fmt.Sprintf("%d/%s/output", nftables.TableFamilyIPv4, egressTable),
		fmt.Sprintf("%d/%s/output", nftables.TableFamilyIPv6, egressTable),
	}, names)
	counters, err := egressCounters(execNetns(t, b.r, b.name))
	require.NoError(t, err)
	public := []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("140.82.112.3"), netip.MustParseAddr("2606:4700::1111")}
	for comment := range counters {
		pf, err := netip.ParsePrefix(comment)
		if err != nil {
			require.Contains(t, []string{"lo", "slirp dns"}, comment)
			continue
		}
		for _, a := range public {
			require.False(t, pf.Contains(a), "rule %s blocks the public address %s", pf, a)
		}
	}
}

// needTools skips the test when a host program it runs inside the sandbox
// (which sees the host's /usr) is missing, and fails it under CI=true,
// where .ci/run must have installed it (Debian nftables, iptables,
// iproute2, curl).
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed; the test runs it inside a sandbox", tool)
			}
			t.Skipf("%s is not installed; the test runs it inside a sandbox", tool)
		}
	}
}
