package spritestest

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aodhq/aod/sprites"
)

// benchBytes is the output size per iteration of the throughput benchmarks.
const benchBytes = 64 << 20

// BenchmarkExecThroughput measures exec output streaming through the client
// and the fake server (a real sandboxed `cat` of a 64 MiB file), and the
// delivery latency of small chunks (the command prints its clock; the
// client subtracts it from the arrival time).
func BenchmarkExecThroughput(b *testing.B) {
	ctx := context.Background()
	s := NewServer(b, Options{})
	c := s.Client()
	const name = "bench"
	if _, err := c.Create(ctx, name); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, benchBytes)
	_, _ = rand.Read(data)
	if err := c.WriteFile(ctx, name, "/home/sprite/data.bin", data, 0o644); err != nil {
		b.Fatal(err)
	}

	b.Run("Throughput", func(b *testing.B) {
		b.SetBytes(benchBytes)
		for b.Loop() {
			ex, err := c.Exec(ctx, name, sprites.ExecRequest{Argv: []string{"cat", "/home/sprite/data.bin"}})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for {
				ev, err := ex.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				n += len(ev.Data)
			}
			ex.Close()
			if n != benchBytes {
				b.Fatalf("got %d bytes, want %d", n, benchBytes)
			}
		}
	})

	b.Run("ChunkLatency", func(b *testing.B) {
		const chunks = 50
		var lat []time.Duration
		for b.Loop() {
			ex, err := c.Exec(ctx, name, sprites.ExecRequest{Argv: []string{"bash", "-c",
				"for i in $(seq 1 " + strconv.Itoa(chunks) + "); do date +%s%N; sleep 0.005; done"}})
			if err != nil {
				b.Fatal(err)
			}
			var line []byte
			for {
				ev, err := ex.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				now := time.Now()
				line = append(line, ev.Data...)
				for {
					i := slices.Index(line, '\n')
					if i < 0 {
						break
					}
					if ns, err := strconv.ParseInt(strings.TrimSpace(string(line[:i])), 10, 64); err == nil {
						lat = append(lat, now.Sub(time.Unix(0, ns)))
					}
					line = line[i+1:]
				}
			}
			ex.Close()
		}
		if len(lat) > 0 {
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "µs-p50/chunk")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "µs-p99/chunk")
		}
	})
}

// BenchmarkPipeThroughput is the baseline: `cat` of the same amount of data
// through a plain os/exec pipe on the host.
func BenchmarkPipeThroughput(b *testing.B) {
	p := filepath.Join(b.TempDir(), "data.bin")
	data := make([]byte, benchBytes)
	_, _ = rand.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchBytes)
	for b.Loop() {
		cmd := exec.Command("cat", p)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, out)
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		if n != benchBytes {
			b.Fatalf("got %d bytes", n)
		}
	}
}
