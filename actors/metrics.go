package actors

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the session actors' Prometheus metrics (namespace aod).
type metrics struct {
	started      *prometheus.CounterVec
	finished     *prometheus.CounterVec
	turnDuration *prometheus.HistogramVec
	eventsLogged prometheus.Counter
	logBatches   prometheus.Histogram
	lagged       prometheus.Counter
	panics       prometheus.Counter
	logAbandoned prometheus.Counter
	reconciled   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, m *Manager) *metrics {
	f := promauto.With(reg)
	out := &metrics{
		started: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "session", Name: "turns_started_total",
			Help: "Turns started (or re-attached after a restart), by runtime.",
		}, []string{"runtime"}),
		finished: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "session", Name: "turns_finished_total",
			Help: "Turns finished, by runtime and outcome (completed, failed).",
		}, []string{"runtime", "outcome"}),
		turnDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "aod", Subsystem: "session", Name: "turn_duration_seconds",
			Help:    "Wall-clock duration of finished turns, by runtime.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}, []string{"runtime"}),
		eventsLogged: f.NewCounter(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "session", Name: "events_logged_total",
			Help: "Events appended to session logs.",
		}),
		logBatches: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "aod", Subsystem: "session", Name: "log_batch_events",
			Help:    "Events per group commit of a session log writer.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		lagged: f.NewCounter(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "sse", Name: "subscribers_lagged_total",
			Help: "Live subscribers dropped for falling behind (they catch up from the log).",
		}),
		panics: f.NewCounter(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "actor", Name: "panics_total",
			Help: "Panics recovered in session actors and their work.",
		}),
		logAbandoned: f.NewCounter(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "session", Name: "log_batches_abandoned_total",
			Help: "Log batches not committed within the retry budget (the session's work stopped, to be resumed by the reconciler).",
		}),
		reconciled: f.NewCounter(prometheus.CounterOpts{
			Namespace: "aod", Subsystem: "session", Name: "reconciler_kicks_total",
			Help: "Unfinished sessions without an actor that the reconciler kicked.",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "aod", Subsystem: "session", Name: "actors",
		Help: "Live session actors on this node.",
	}, func() float64 { return float64(m.Live()) })
	for _, rt := range []string{"claude", "codex", "gemini", "opencode"} {
		out.started.WithLabelValues(rt).Add(0)
		out.finished.WithLabelValues(rt, "completed").Add(0)
		out.finished.WithLabelValues(rt, "failed").Add(0)
	}
	return out
}
