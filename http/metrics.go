package http

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the HTTP layer's Prometheus metrics.
type metrics struct {
	requests   *prometheus.HistogramVec
	sseClients prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "aod", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "API request latency by route pattern, method and status (streams count until their handler returns).",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method", "code"}),
		sseClients: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "aod", Subsystem: "sse", Name: "clients",
			Help: "Open SSE streams.",
		}),
	}
}

func (m *metrics) observe(c *fiber.Ctx, start time.Time, status int) {
	route := c.Route().Path
	if route == "/" || route == "" {
		route = "unmatched"
	}
	// Fiber's strings alias pooled buffers: copy before the registry keeps them.
	m.requests.WithLabelValues(utils.CopyString(route), utils.CopyString(c.Method()), strconv.Itoa(status)).
		Observe(time.Since(start).Seconds())
}

// metricsHandler serves the registry in the Prometheus text format.
func metricsHandler(g prometheus.Gatherer) fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}
