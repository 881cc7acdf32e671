package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/nodehook"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/presence"
)

// The series that describe the cluster: only the leader exports them.
var (
	jobsDesc = prometheus.NewDesc(fqName("jobs"),
		"Jobs of the service by queue and state (available, scheduled, running, completed, cancelled, discarded, waiting). Exported by the leader only, read at most once per interval.",
		[]string{"queue", "state"}, nil)
	queueWorkersDesc = prometheus.NewDesc(fqName("queue_workers"),
		"Live instances working each queue. Exported by the leader only.", []string{"queue"}, nil)
	queueLagDesc = prometheus.NewDesc(fqName("queue_lag_seconds"),
		"How long the oldest available job whose time has come has waited for a worker, by queue: 0 when none waits. The figure to alert on. Exported by the leader only, read at most once per interval.",
		[]string{"queue"}, nil)
	queuePausedDesc = prometheus.NewDesc(fqName("queue_paused"),
		"1 for a paused queue, else 0. Exported by the leader only.", []string{"queue"}, nil)
	presenceDesc = prometheus.NewDesc(fqName("presence_users"),
		"Distinct users with at least one connection anywhere in the service. Exported by the leader only, when it uses presence.", nil, nil)
)

// clusterCollector exports the cluster-level figures while its node leads, and nothing
// otherwise. It reads the job counts at most once per interval, under mu, so concurrent
// scrapes wait for one reading and share it.
type clusterCollector struct {
	node     *twice.Node
	interval time.Duration

	mu     sync.Mutex // protects read, queues
	read   time.Time  // when queues was last read (or its reading failed); zero: never
	queues []jobs.QueueStats
}

func newClusterCollector(node *twice.Node, interval time.Duration) *clusterCollector {
	return &clusterCollector{node: node, interval: interval}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- queueWorkersDesc
	ch <- queueLagDesc
	ch <- queuePausedDesc
	ch <- presenceDesc
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.node.IsLeader() {
		return
	}
	started, unused := nodehook.Blocks(c.node)
	for _, b := range append(started, unused...) {
		if j, ok := b.(*jobs.Client); ok {
			c.collectJobs(ch, j)
		}
	}
	for _, b := range started { // presence keeps the service's view in memory once started
		if p, ok := b.(*presence.Presence); ok {
			ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
			users, err := p.Online(ctx, "")
			cancel()
			if err == nil {
				ch <- prometheus.MustNewConstMetric(presenceDesc, prometheus.GaugeValue, float64(len(users)))
			}
		}
	}
}

// collectJobs exports the job counts, read again if the last reading is older than the
// interval. The jobs client need not be started: counting is one reading (jobs.Client.Stats:
// a grouped count of the job table, the queues, the live workers), the same whether one
// scraper or fifty ask.
func (c *clusterCollector) collectJobs(ch chan<- prometheus.Metric, j *jobs.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.read.IsZero() || time.Since(c.read) >= c.interval {
		ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
		qs, err := j.Stats(ctx)
		cancel()
		// A failed reading waits for the next interval too: a database in trouble is not
		// asked again by every scrape.
		c.read, c.queues = time.Now(), qs
		if err != nil {
			c.node.Logger().Warn("metrics: cannot count the jobs; the leader exports no job counts until the next reading", "err", err)
		}
	}
	for _, q := range c.queues {
		for _, s := range []struct {
			state string
			n     int
		}{{"available", q.Available}, {"scheduled", q.Scheduled}, {"running", q.Running}, {"completed", q.Completed},
			{"cancelled", q.Cancelled}, {"discarded", q.Discarded}, {"waiting", q.Waiting}} {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(s.n), q.Queue, s.state)
		}
		ch <- prometheus.MustNewConstMetric(queueWorkersDesc, prometheus.GaugeValue, float64(q.Workers), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueLagDesc, prometheus.GaugeValue, q.Lag.Seconds(), q.Queue)
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(queuePausedDesc, prometheus.GaugeValue, paused, q.Queue)
	}
}
