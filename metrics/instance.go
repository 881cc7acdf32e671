package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/nodehook"
	"github.com/twicehq/twice/realtime"
)

// The series of one instance, read from the counters the node and its blocks keep.
var (
	upDesc = prometheus.NewDesc(fqName("up"),
		"1 while the node is open and serving this scrape.", nil, nil)
	panicsDesc = prometheus.NewDesc(fqName("panics_recovered_total"),
		"Panics the node recovered from application code it runs (workers, handlers, callbacks, loaders, checks).", nil, nil)
	leaderDesc = prometheus.NewDesc(fqName("leader"),
		"1 while this instance leads the service, else 0.", nil, nil)
	termsDesc = prometheus.NewDesc(fqName("leader_terms_total"),
		"Terms of leadership this instance won; summed over the instances, the leader changes.", nil, nil)
	renewFailDesc = prometheus.NewDesc(fqName("lease_renewal_failures_total"),
		"Statements renewing this instance's leases that failed (each is retried; leases expire only at their deadlines).", nil, nil)
	lostDesc = prometheus.NewDesc(fqName("bus_lost_signals_total"),
		"Messages from the bus saying signals on a channel may have been missed (each makes its subscriber read the database).", nil, nil)
	busCheckedDesc = prometheus.NewDesc(fqName("bus_messages_checked_total"),
		"Bus messages checked against the cluster secret, by result: verified, or dropped as unsigned, forged or stale. Absent without a secret.", []string{"result"}, nil)
	cacheHitsDesc = prometheus.NewDesc(fqName("cache_hits_total"),
		"Cache reads answered from this instance's cache, by cache.", []string{"cache"}, nil)
	cacheMissesDesc = prometheus.NewDesc(fqName("cache_misses_total"),
		"Cache reads that had to load, by cache.", []string{"cache"}, nil)
	cacheFlushesDesc = prometheus.NewDesc(fqName("cache_flushes_total"),
		"Whole-cache flushes (InvalidateAll, lost or unreadable bus signals), by cache.", []string{"cache"}, nil)
	cacheInvalDesc = prometheus.NewDesc(fqName("cache_invalidations_total"),
		"Keys invalidated in this instance's cache, by this instance or another, by cache.", []string{"cache"}, nil)
	cacheEntriesDesc = prometheus.NewDesc(fqName("cache_entries"),
		"Entries this instance's cache holds, by cache.", []string{"cache"}, nil)
	idemReplaysDesc = prometheus.NewDesc(fqName("idempotency_replays_total"),
		"Requests answered by replaying the response stored under their Idempotency-Key.", nil, nil)
	rtConnsDesc = prometheus.NewDesc(fqName("realtime_connections"),
		"Real-time hub connections this instance holds.", nil, nil)
	rtDeliveredDesc = prometheus.NewDesc(fqName("realtime_messages_delivered_total"),
		"Messages the hub gave to its connections, by path: direct (as they arrived on the signed bus, no read) or history (from a read of the database).", []string{"path"}, nil)
	rtReadsDesc = prometheus.NewDesc(fqName("realtime_history_reads_total"),
		"Reads of the real-time history, by result: ok or failed (each failed one is tried again).", []string{"result"}, nil)
	rtSlowDesc = prometheus.NewDesc(fqName("realtime_slow_clients_total"),
		"Hub connections closed because their client took no frame in time or let its buffer fill.", nil, nil)
	cronTicksDesc = prometheus.NewDesc(fqName("cron_ticks_total"),
		"Cron ticks this instance passed, by outcome: fired (on time or late), late (fired after their grace period, caught up), skipped (due but not fired: missed beyond the grace and not caught up, or overlapping a run).", []string{"outcome"}, nil)
	idemConflictsDesc = prometheus.NewDesc(fqName("idempotency_conflicts_total"),
		"Requests refused because their Idempotency-Key was reused for another request (reason reused, 422) or is still running (reason in_use, 409).", []string{"reason"}, nil)
)

// instanceCollector reads, at each scrape, the counters the node and its started blocks
// keep in memory: a few atomic loads, no statement.
type instanceCollector struct {
	node *twice.Node
}

func (c *instanceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, panicsDesc, leaderDesc, termsDesc, renewFailDesc, lostDesc, busCheckedDesc,
		cacheHitsDesc, cacheMissesDesc, cacheFlushesDesc, cacheInvalDesc, cacheEntriesDesc, idemReplaysDesc, idemConflictsDesc,
		rtConnsDesc, rtDeliveredDesc, rtReadsDesc, rtSlowDesc, cronTicksDesc} {
		ch <- d
	}
}

func (c *instanceCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.node
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(upDesc, 1)
	counter(panicsDesc, uint64(n.Panics()))
	leading := 0.0
	if n.IsLeader() {
		leading = 1
	}
	gauge(leaderDesc, leading)
	counter(termsDesc, n.Leader().Terms())
	counter(renewFailDesc, n.Leases().RenewalFailures())
	counter(lostDesc, nodehook.LostSignals(n))
	if len(n.Config().ClusterSecret) > 0 {
		st := n.BusStats()
		counter(busCheckedDesc, st.Verified, "verified")
		counter(busCheckedDesc, st.Unsigned, "unsigned")
		counter(busCheckedDesc, st.Forged, "forged")
		counter(busCheckedDesc, st.Stale, "stale")
	}
	started, _ := nodehook.Blocks(n)
	for _, b := range started {
		switch b := b.(type) {
		case *cache.Manager:
			for name, st := range b.Stats() {
				counter(cacheHitsDesc, st.Hits, name)
				counter(cacheMissesDesc, st.Misses, name)
				counter(cacheFlushesDesc, st.Flushes, name)
				counter(cacheInvalDesc, st.Invalidations, name)
				gauge(cacheEntriesDesc, float64(st.Entries), name)
			}
		case *realtime.Hub:
			st := b.Stats()
			gauge(rtConnsDesc, float64(st.Connections))
			counter(rtDeliveredDesc, uint64(st.Direct), "direct")
			counter(rtDeliveredDesc, uint64(st.FromHistory), "history")
			counter(rtReadsDesc, uint64(st.Reads-st.FailedReads), "ok")
			counter(rtReadsDesc, uint64(st.FailedReads), "failed")
			counter(rtSlowDesc, uint64(st.SlowClosed))
		case *cron.Cron:
			st := b.Stats()
			counter(cronTicksDesc, st.Fired, "fired")
			counter(cronTicksDesc, st.Late, "late")
			counter(cronTicksDesc, st.Skipped, "skipped")
		case *idempotency.Keys:
			st := b.Stats()
			counter(idemReplaysDesc, st.Replays)
			counter(idemConflictsDesc, st.Reused, "reused")
			counter(idemConflictsDesc, st.InUse, "in_use")
		}
	}
}
