package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// marker prefixes every timestamp the benchmarks put into event data:
// "@@" then microseconds since the Unix epoch.
const marker = "@@"

// newTransports returns n HTTP transports for many long-lived SSE
// connections to one loopback host.
func newTransports(n int) []*http.Transport {
	out := make([]*http.Transport, n)
	for i := range out {
		out[i] = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: 1024,
			DisableCompression:  true,
			ReadBufferSize:      16 << 10,
		}
	}
	return out
}

// Subscriber is one SSE client of GET /sessions/{id}/stream. It records the
// latency of every marker it reads (receipt time minus the embedded emit
// time) and counts output events.
type Subscriber struct {
	// Lat holds one latency in microseconds per marker received, appended
	// only while Record is set.
	Lat []int32
	// Record switches latency recording on (set before publishing).
	Record atomic.Bool
	// Outputs counts output events; Started is set after the start event.
	Outputs atomic.Int64
	Started atomic.Bool
	// Terminal is the type of the terminal event, if one arrived.
	Terminal atomic.Value
	// LastID is the id of the last id-bearing event.
	LastID atomic.Int64
	// Err is the error that ended the stream early, if any.
	Err atomic.Value
	// Done is closed when the stream ends.
	Done chan struct{}
}

// Subscribe opens a stream and reads it in a goroutine until it ends or ctx
// is cancelled. It returns after the response headers arrived.
func Subscribe(ctx context.Context, tr *http.Transport, base, key, sessionID string, lastID int64) (*Subscriber, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/sessions/"+sessionID+"/stream", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, fmt.Errorf("stream: HTTP %d", resp.StatusCode)
	}
	s := &Subscriber{Done: make(chan struct{})}
	go func() {
		defer close(s.Done)
		defer resp.Body.Close()
		s.read(bufio.NewReaderSize(resp.Body, 32<<10))
	}()
	return s, nil
}

var (
	outputType = []byte(`"type": "output"`)
	startType  = []byte(`"type": "start"`)
	terminals  = [][]byte{[]byte(`"type": "exit"`), []byte(`"type": "error"`), []byte(`"type": "terminated"`), []byte(`"type": "stale"`)}
	markerB    = []byte(marker)
)

// read parses SSE lines cheaply: only what the benchmarks need (the id
// line, the event type and the markers in the data line).
func (s *Subscriber) read(r *bufio.Reader) {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if err != bufio.ErrBufferFull {
				s.Err.Store(err)
				return
			}
			// A data line longer than the buffer: only possible in replay
			// of huge chunks; keep reading.
		}
		switch {
		case bytes.HasPrefix(line, []byte("id: ")):
			if v, err := strconv.ParseInt(string(bytes.TrimSpace(line[4:])), 10, 64); err == nil {
				s.LastID.Store(v)
			}
		case bytes.HasPrefix(line, []byte("data: ")):
			now := time.Now().UnixMicro()
			if bytes.Contains(line, outputType) {
				if s.Record.Load() {
					s.Lat = appendMarkers(s.Lat, line, now)
				}
				s.Outputs.Add(1)
				continue
			}
			if !s.Started.Load() && bytes.Contains(line, startType) {
				s.Started.Store(true)
				continue
			}
			for _, t := range terminals {
				if bytes.Contains(line, t) {
					s.Terminal.Store(string(t))
					return
				}
			}
		}
	}
}

// appendMarkers appends now − t (µs) for every "@@t" in data.
func appendMarkers(lat []int32, data []byte, now int64) []int32 {
	for {
		i := bytes.Index(data, markerB)
		if i < 0 {
			return lat
		}
		data = data[i+len(markerB):]
		var t int64
		j := 0
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			t = t*10 + int64(data[j]-'0')
			j++
		}
		data = data[j:]
		if j >= 13 {
			lat = append(lat, int32(min(now-t, 1<<31-1)))
		}
	}
}

// Stats summarises latencies in microseconds.
type Stats struct {
	N                        int
	P50, P90, P99, P999, Max time.Duration
}

func summarize(lat []int32) Stats {
	if len(lat) == 0 {
		return Stats{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(p * float64(len(s)-1))
		return time.Duration(s[i]) * time.Microsecond
	}
	return Stats{N: len(s), P50: q(0.50), P90: q(0.90), P99: q(0.99), P999: q(0.999), Max: time.Duration(s[len(s)-1]) * time.Microsecond}
}

func (s Stats) String() string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s p99.9=%s max=%s", s.N, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P999), ms(s.Max))
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }
