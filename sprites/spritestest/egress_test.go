package spritestest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
)

// TestServerEnforcesAllowList: the fake records a policy as Sprites does
// and, through its runner, enforces it: an allowed name (a loopback test
// server, by the runner's test override) answers through the sandbox's
// proxy, a name that is not allowed does not.
func TestServerEnforcesAllowList(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed; the test runs it inside a sandbox")
		}
		t.Skip("curl is not installed; the test runs it inside a sandbox")
	}
	var hits atomic.Int64
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "hello %s\n", r.Host)
	})
	tlsSrv := httptest.NewTLSServer(hello)
	t.Cleanup(tlsSrv.Close)
	plain := httptest.NewServer(hello)
	t.Cleanup(plain.Close)
	s := NewServer(t, Options{RunnerConfig: runner.Config{EgressHosts: map[string]string{
		"api.allowed.test": tlsSrv.Listener.Addr().String(),
		"web.allowed.test": plain.Listener.Addr().String(),
		"denied.test":      plain.Listener.Addr().String(),
	}}})
	ctx := context.Background()
	c := sprites.NewClient(s.URL(), s.Token())
	name := "egress-" + randHex(4)
	_, err := c.Create(ctx, name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Delete(context.Background(), name) })
	policy := sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*.allowed.test", Action: "allow"}, {Domain: "*", Action: "deny"}}}
	require.NoError(t, c.SetNetworkPolicy(ctx, name, policy))
	require.Equal(t, []sprites.NetworkPolicy{policy}, s.Policies(name))

	run := func(script string) result {
		ex, err := c.Exec(ctx, name, bash(script))
		require.NoError(t, err)
		defer ex.Close()
		return collect(ctx, t, ex, result{})
	}
	// https goes through a CONNECT tunnel (TLS end to end; -k for the test
	// server's certificate), plain http is forwarded.
	res := run(`curl -sSfk --max-time 10 https://api.allowed.test/ && curl -sSf --max-time 10 http://web.allowed.test/`)
	require.Equal(t, "hello api.allowed.test\nhello web.allowed.test\n", string(res.stdout), "stderr: %s", res.stderr)
	require.Equal(t, int64(2), hits.Load())
	res = run(`curl -sSf --max-time 10 http://denied.test/`)
	require.NotEqual(t, 0, res.code)
	require.Contains(t, string(res.stderr), "403")
	require.Equal(t, int64(2), hits.Load(), "a name that is not allowed reached the test server")
}
