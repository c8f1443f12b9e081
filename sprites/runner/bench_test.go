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

// benchRunners returns two runners, with the default resource limits
// (cgroup, 10 GiB disk image, rlimits) and without limits, for the limit
// benchmarks, which alternate between them in the same loop so that the
// load of the machine weighs on both alike.
func benchRunners(b *testing.B) (on, off *Runner) {
	var err error
	on, err = New(Config{Dir: b.TempDir(), Network: NetworkHost})
	require.NoError(b, err)
	off, err = New(Config{Dir: b.TempDir(), Network: NetworkHost, Limits: Limits{Off: true}})
	require.NoError(b, err)
	return on, off
}

// p50ms is the median of d in milliseconds.
func p50ms(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2].Microseconds()) / 1000
}

// BenchmarkCreate measures Create (ready to run commands) and Delete of a
// sandbox with the resource limits on and off, and reports the medians
// and the ratio on/off.
func BenchmarkCreate(b *testing.B) {
	on, off := benchRunners(b)
	ctx := context.Background()
	var create, del [2][]time.Duration
	i := 0
	for b.Loop() {
		for k, r := range []*Runner{on, off} {
			name := "bench-" + strconv.Itoa(i)
			i++
			t0 := time.Now()
			require.NoError(b, r.Create(ctx, name))
			t1 := time.Now()
			require.NoError(b, r.Delete(ctx, name))
			create[k] = append(create[k], t1.Sub(t0))
			del[k] = append(del[k], time.Since(t1))
		}
	}
	con, coff := p50ms(create[0]), p50ms(create[1])
	b.ReportMetric(con, "create-ms-on")
	b.ReportMetric(coff, "create-ms-off")
	b.ReportMetric(con/coff, "create-ratio")
	b.ReportMetric(p50ms(del[0]), "delete-ms-on")
	b.ReportMetric(p50ms(del[1]), "delete-ms-off")
}

// BenchmarkExecStart measures Start (until the command runs) of `true`,
// and Start to its exit, with the resource limits on and off, and reports
// the medians and the ratio on/off.
func BenchmarkExecStart(b *testing.B) {
	on, off := benchRunners(b)
	ctx := context.Background()
	for _, r := range []*Runner{on, off} {
		require.NoError(b, r.Create(ctx, "bench"))
		b.Cleanup(func() { require.NoError(b, r.Delete(context.Background(), "bench")) })
	}
	var start, exit [2][]time.Duration
	for b.Loop() {
		for k, r := range []*Runner{on, off} {
			t0 := time.Now()
			p, err := r.Start(ctx, "bench", Spec{Argv: []string{"true"}})
			require.NoError(b, err)
			start[k] = append(start[k], time.Since(t0))
			require.NoError(b, p.Watch(ctx, sprites.Offsets{}, func(sprites.Event) error { return nil }))
			exit[k] = append(exit[k], time.Since(t0))
		}
	}
	son, soff := p50ms(start[0]), p50ms(start[1])
	b.ReportMetric(son, "start-ms-on")
	b.ReportMetric(soff, "start-ms-off")
	b.ReportMetric(son/soff, "start-ratio")
	b.ReportMetric(p50ms(exit[0]), "exit-ms-on")
	b.ReportMetric(p50ms(exit[1]), "exit-ms-off")
}
