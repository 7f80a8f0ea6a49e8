package main

import (
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// metrics are the server's Prometheus metrics. No label carries a stream
// name or anything else a client chooses: the only label is a publish's
// HTTP status, of which there are a handful.
type metrics struct {
	reg       *prometheus.Registry
	appended  prometheus.Counter
	commitDur prometheus.Histogram
	commitN   prometheus.Histogram
	failures  prometheus.Counter
	publish   *prometheus.CounterVec
}

// newMetrics makes the metrics that the log and the handler feed as they
// work; the ones read from the server's parts are added by watch, once
// they exist.
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sselog_events_appended_total",
			Help: "Events stored (each acknowledged once durable).",
		}),
		commitDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sselog_commit_duration_seconds",
			Help:    "Time of one commit of the writer: a bbolt transaction, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs to 3.3s
		}),
		commitN: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sselog_commit_events",
			Help:    "Events stored by one commit: above 1 under load, group commit at work.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 to 8192
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sselog_commit_failures_total",
			Help: "Commits that failed (disk full, I/O errors): their publishes were answered 503 with nothing stored.",
		}),
		publish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sselog_publish_requests_total",
			Help: "Publish requests answered, by HTTP status.",
		}, []string{"code"}),
	}
	// The usual answers exist from the start, so that a rate over them
	// sees their first increase.
	for _, code := range []string{"201", "400", "401", "403", "413", "429", "503"} {
		m.publish.WithLabelValues(code)
	}
	m.reg.MustRegister(m.appended, m.commitDur, m.commitN, m.failures, m.publish,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeCommit is the log's store.Options.ObserveCommit.
func (m *metrics) observeCommit(st store.CommitStats) {
	m.commitDur.Observe(st.Took.Seconds())
	if st.Failed {
		m.failures.Inc()
	}
	if st.Events > 0 {
		m.commitN.Observe(float64(st.Events))
		m.appended.Add(float64(st.Events))
	}
}

// observePublish is the handler's httpapi.Options.ObservePublish, called
// from every publish's goroutine (CounterVec is safe for that).
func (m *metrics) observePublish(status int) {
	m.publish.WithLabelValues(strconv.Itoa(status)).Inc()
}

// watch adds the metrics read from the server's parts at each scrape.
func (m *metrics) watch(log eventLog, hub *stream.Hub, h *httpapi.Handler, w *retention.Worker) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sselog_subscribers",
			Help: "Open SSE streams.",
		}, func() float64 { return float64(h.OpenStreams()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sselog_events_delivered_total",
			Help: "Events handed to subscribers, live and replayed from the log.",
		}, func() float64 { live, replayed := hub.Handed(); return float64(live + replayed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sselog_replay_events_total",
			Help: "Events handed to subscribers from the log (catching up, resuming).",
		}, func() float64 { _, replayed := hub.Handed(); return float64(replayed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sselog_retention_removed_events_total",
			Help: "Events removed by retention.",
		}, func() float64 { return float64(w.Removed()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sselog_streams",
			Help: "Streams in the database (deleted ones not counted).",
		}, func() float64 {
			streams, err := log.Streams()
			if err != nil {
				return 0
			}
			return float64(len(streams))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sselog_db_size_bytes",
			Help: "Size of the database file.",
		}, func() float64 {
			st, err := os.Stat(log.Path())
			if err != nil {
				return 0
			}
			return float64(st.Size())
		}),
	)
}

// handler serves the metrics in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// serveMetrics serves the metrics on their own listener, without
// authentication: for a private network only (see --metrics-addr).
func serveMetrics(ln net.Listener, h http.Handler) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv
}
