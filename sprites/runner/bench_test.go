package runner

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/egress"
)

// BenchmarkWatchLatency measures the delay between a command writing a
// line (stamped with its clock) and Watch delivering it, and reports the
// p50 and p99 in milliseconds.
func BenchmarkWatchLatency(b *testing.B) {
	r, err := New(Config{Dir: b.TempDir(), Network: NetworkHost})
	require.NoError(b, err)
	ctx := context.Background()
	require.NoError(b, r.Create(ctx, "bench"))
	b.Cleanup(func() { require.NoError(b, r.Delete(context.Background(), "bench")) })
	var lat []time.Duration
	for b.Loop() {
		p, err := r.Start(ctx, "bench", Spec{Argv: []string{"bash", "-c", `for i in $(seq 1 100); do echo $EPOCHREALTIME; sleep 0.002; done`}})
		require.NoError(b, err)
		var partial string
		require.NoError(b, p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
			now := time.Now()
			lines := strings.Split(partial+string(ev.Data), "\n")
			partial = lines[len(lines)-1]
			for _, l := range lines[:len(lines)-1] {
				sec, err := strconv.ParseFloat(l, 64)
				require.NoError(b, err)
				lat = append(lat, now.Sub(time.Unix(0, int64(sec*1e9))))
			}
			return nil
		}))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}

// BenchmarkStartNetwork measures Start to exit of `true` per network kind:
// private (slirp4netns + egress filter), allow-list (proxy, no slirp),
// deny-all and host.
func BenchmarkStartNetwork(b *testing.B) {
	for _, tt := range []struct {
		name    string
		network string
		policy  sprites.NetworkPolicy
	}{
		{"private", NetworkPrivate, sprites.NetworkPolicy{}},
		{"allowlist", NetworkPrivate, sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "a.test", Action: "allow"}, {Domain: "*", Action: "deny"}}}},
		{"denyall", NetworkPrivate, sprites.NetworkPolicy{Rules: []sprites.Rule{{Domain: "*", Action: "deny"}}}},
		{"host", NetworkHost, sprites.NetworkPolicy{}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r, err := New(Config{Dir: b.TempDir(), Network: tt.network})
			require.NoError(b, err)
			ctx := context.Background()
			require.NoError(b, r.Create(ctx, "bench"))
			b.Cleanup(func() { require.NoError(b, r.Delete(context.Background(), "bench")) })
			require.NoError(b, r.SetPolicy("bench", tt.policy))
			for b.Loop() {
				p, err := r.Start(ctx, "bench", Spec{Argv: []string{"true"}})
				require.NoError(b, err)
				require.NoError(b, p.Watch(ctx, sprites.Offsets{}, func(sprites.Event) error { return nil }))
			}
		})
	}
}

// BenchmarkEgressFilterInstall measures installing the egress filter in a
// new network namespace (the cost the filter adds to each private exec).
func BenchmarkEgressFilterInstall(b *testing.B) {
	host, err := egress.HostAddrs()
	require.NoError(b, err)
	for b.Loop() {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread leaves the host's namespace and ends with the goroutine
			ns, err := newNetworkNamespace()
			if err == nil {
				err = installEgressFilter(ns, host)
				ns.Close()
			}
			errc <- err
		}()
		require.NoError(b, <-errc)
	}
}

// BenchmarkCreateExec measures what the isolation adds to a sandbox's
// life: Create (uid claim, chown of the writable trees, stage mount),
// then execs of `true` (bwrap as the sandbox uid with the seccomp filter),
// then Delete. Reported per operation in milliseconds. Run it on a tree
// without the isolation for the baseline (docs/benchmarks.md).
func BenchmarkCreateExec(b *testing.B) {
	r, err := New(Config{Dir: b.TempDir(), Network: NetworkHost})
	require.NoError(b, err)
	ctx := context.Background()
	const execs = 5
	var create, exec, del time.Duration
	i := 0
	for b.Loop() {
		name := "bench-" + strconv.Itoa(i)
		i++
		t0 := time.Now()
		require.NoError(b, r.Create(ctx, name))
		t1 := time.Now()
		for range execs {
			p, err := r.Start(ctx, name, Spec{Argv: []string{"true"}})
			require.NoError(b, err)
			require.NoError(b, p.Watch(ctx, sprites.Offsets{}, func(sprites.Event) error { return nil }))
		}
		t2 := time.Now()
		require.NoError(b, r.Delete(ctx, name))
		create += t1.Sub(t0)
		exec += t2.Sub(t1)
		del += time.Since(t2)
	}
	b.ReportMetric(float64(create.Milliseconds())/float64(i), "create-ms")
	b.ReportMetric(float64(exec.Milliseconds())/float64(i*execs), "exec-ms")
	b.ReportMetric(float64(del.Milliseconds())/float64(i), "delete-ms")
}
