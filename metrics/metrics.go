// Package metrics exports a node's figures to Prometheus: its jobs, leadership, bus,
// caches, sessions, idempotency keys, presence and HTTP requests.
//
// Make one [Metrics] per node with [New], serve [Metrics.Handler] at /metrics (or add it
// to a registry of your own with [Metrics.Register]), and wrap your mux with
// [Metrics.Middleware] to count requests by route and outcome.
//
// Every series carries the constant labels service and instance_id (the node's
// [twice.Node.Service] and [twice.Node.ID]), unless [Config].TargetLabels says the scrape
// configuration attaches them. No label takes an unbounded value: queues, job states,
// cache names and route patterns are fixed by the code, never job ids, users or keys.
//
// Figures that describe the cluster rather than the instance (jobs by queue and state,
// workers per queue, users online) are exported by the leader alone, so they can be summed
// across instances without counting twice; the other instances export nothing for them.
// The leader reads them at most once per [Config].Interval, in one reading
// ([jobs.Client.Stats]: the job counts by queue and state, the queues' settings, the live
// workers) shared by every scrape, whatever the number of scrapers; other instances run no
// statement for a scrape. A reading per interval rather than counters the blocks keep:
// counting rows in the database would add a write to every enqueue and state change, on
// rows every instance updates, while the reading costs one grouped scan per interval on one
// instance, and is exact after crashes and rescues. Users online come from the leader's
// in-memory view of presence, when it uses presence.
//
// The rest are per instance: counters the node and its blocks keep in memory (a few atomic
// loads per scrape, no statement) and histograms observed where the work ends (a job's
// attempt, a session statement, a request).
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/nodehook"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/session"
)

// namespace prefixes every metric's name: twice_jobs, twice_http_requests_total, ….
const namespace = "twice"

func fqName(name string) string { return prometheus.BuildFQName(namespace, "", name) }

// IntervalDefault is the default of [Config].Interval.
const IntervalDefault = 15 * time.Second

// DefaultJobBuckets are the default buckets of the job duration and queue wait histograms,
// in seconds: from 5 ms to 10 minutes.
var DefaultJobBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Config configures [New]. The zero value is ready to use.
type Config struct {
	// Interval is how often, at most, the leader reads the cluster-level figures from the
	// database (a grouped count over the job table, shared by every scrape until the next
	// reading). Scrapes in between see the last reading. Defaults to [IntervalDefault].
	Interval time.Duration
	// JobBuckets are the upper bounds, in seconds, of the job duration and queue wait
	// histograms. Defaults to [DefaultJobBuckets].
	JobBuckets []float64
	// TargetLabels leaves the constant labels service and instance_id off every series, for
	// a scrape configuration that attaches them as target labels. Defaults to false: the
	// labels are on.
	TargetLabels bool
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Interval == 0 {
		c.Interval = IntervalDefault
	}
	if c.JobBuckets == nil {
		c.JobBuckets = DefaultJobBuckets
	}
	return c
}

func (c Config) validate() error {
	if c.Interval < 0 {
		return errors.New("metrics: Config.Interval must not be negative")
	}
	for i, b := range c.JobBuckets {
		if i > 0 && b <= c.JobBuckets[i-1] {
			return errors.New("metrics: Config.JobBuckets must increase")
		}
	}
	return nil
}

// Metrics are one node's Prometheus collectors. Make them with [New]; they are safe for
// concurrent use.
type Metrics struct {
	node *twice.Node
	cfg  Config
	log  *slog.Logger

	jobDuration *prometheus.HistogramVec // queue, state
	jobWait     *prometheus.HistogramVec // queue
	sessionOps  *prometheus.HistogramVec // op
	requests    *prometheus.CounterVec   // route, method, code
	reqDuration *prometheus.HistogramVec // route, method
	instance    *instanceCollector
	cluster     *clusterCollector
	probe       *busProbe

	handlerOnce sync.Once
	handler     http.Handler
}

// New makes the collectors of node's figures and sets the observers its jobs and sessions
// call when a job's attempt or a session statement ends (see [jobs.Client.Observe] and
// [session.Sessions.Observe]): make one Metrics per node, since a second replaces the
// first's observers. It starts no block and runs no statement.
func New(node *twice.Node, cfg Config) (*Metrics, error) {
	if node == nil {
		return nil, errors.New("metrics: node is nil")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Metrics{node: node, cfg: cfg, log: node.Logger()}
	m.jobDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "job_duration_seconds",
		Help:      "How long job attempts ran on this instance, by queue and the state the attempt left the job in.",
		Buckets:   cfg.JobBuckets,
	}, []string{"queue", "state"})
	m.jobWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "job_wait_seconds",
		Help:      "How long jobs waited in their queue, from their scheduled time to the start of the attempt this instance ran, in database time.",
		Buckets:   cfg.JobBuckets,
	}, []string{"queue"})
	m.sessionOps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "session_store_seconds",
		Help:      "How long the session store's statements took, by operation (load, save).",
		Buckets:   prometheus.DefBuckets,
	}, []string{"op"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "http_requests_total",
		Help:      "HTTP requests through Metrics.Middleware, by route pattern, method and status class (2xx, 3xx, 4xx, 5xx).",
	}, []string{"route", "method", "code"})
	m.reqDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "http_request_duration_seconds",
		Help:      "How long HTTP requests through Metrics.Middleware took, by route pattern and method.",
		Buckets:   prometheus.DefBuckets,
	}, []string{"route", "method"})
	m.instance = &instanceCollector{node: node}
	m.cluster = newClusterCollector(node, cfg.Interval)
	m.probe = newBusProbe(node, cfg.Interval)

	started, unused := nodehook.Blocks(node)
	for _, b := range append(started, unused...) {
		switch b := b.(type) {
		case *jobs.Client:
			b.Observe(m.observeJob)
		case *session.Sessions:
			b.Observe(m.observeSession)
		}
	}
	return m, nil
}

func (m *Metrics) observeJob(a jobs.Attempt) {
	m.jobDuration.WithLabelValues(a.Queue, string(a.State)).Observe(a.Run.Seconds())
	m.jobWait.WithLabelValues(a.Queue).Observe(a.Wait.Seconds())
}

func (m *Metrics) observeSession(op string, d time.Duration) {
	m.sessionOps.WithLabelValues(op).Observe(d.Seconds())
}

// collectors are every collector of m.
func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.jobDuration, m.jobWait, m.sessionOps, m.requests, m.reqDuration, m.instance, m.cluster, m.probe}
}

// Register adds the node's collectors to r, with the constant labels service and
// instance_id unless [Config].TargetLabels is set, for a service that serves its own
// registry. It does not add the Go runtime and process collectors (see [Metrics.Handler]).
func (m *Metrics) Register(r prometheus.Registerer) error {
	return m.register(r, m.collectors()...)
}

// register adds cs to r, labelled unless Config.TargetLabels is set.
func (m *Metrics) register(r prometheus.Registerer, cs ...prometheus.Collector) error {
	if !m.cfg.TargetLabels {
		r = prometheus.WrapRegistererWith(prometheus.Labels{"service": m.node.Service(), "instance_id": m.node.ID()}, r)
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the node's metrics in the Prometheus exposition format, from a registry
// of its own that also holds the Go runtime and process collectors (go_*, process_*), all
// with the labels service and instance_id unless [Config].TargetLabels is set.
// Mount it where Prometheus scrapes, usually GET /metrics, on an address only it reaches.
func (m *Metrics) Handler() http.Handler {
	m.handlerOnce.Do(func() {
		reg := prometheus.NewRegistry()
		err := m.register(reg, append(m.collectors(),
			collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))...)
		if err != nil {
			// Every collector's descriptions are fixed in this package: a clash is its bug.
			panic("metrics: " + err.Error())
		}
		m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogError{m.log}})
	})
	return m.handler
}

// slogError hands promhttp's errors to the node's logger.
type slogError struct{ log *slog.Logger }

func (l slogError) Println(v ...any) {
	l.log.Error("metrics: serving a scrape", "err", fmt.Sprint(v...))
}
