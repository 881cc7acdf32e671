package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/loop"
)

// ProbeChannel is the bus channel on which each instance's metrics time the bus: a probe
// carries its send time on the sender's monotonic clock, and the sender times it when it
// comes back (a bus delivers to the publisher too). It changes nothing: other instances
// ignore it.
const ProbeChannel = "twice.metrics.probe"

// DefaultBusBuckets are the buckets of the bus round-trip histogram, in seconds: from half
// a millisecond to 5 seconds.
var DefaultBusBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// busProbe times the node's own signals through its bus and back: a probe sent at most
// once per interval, when a scrape comes, so that an instance nobody scrapes sends none.
// The round trip is the bus's lag as the blocks feel it: a signal's path from a commit to
// the instances it wakes, through the database's NOTIFY, the SQLite table and socket, or
// NATS.
type busProbe struct {
	node     *twice.Node
	interval time.Duration
	base     time.Time // the probes' clock: time since base, monotonic
	hist     prometheus.Histogram

	mu         sync.Mutex // protects sent, subscribed
	sent       time.Time  // when the last probe was sent; zero: never
	subscribed bool
}

func newBusProbe(node *twice.Node, interval time.Duration) *busProbe {
	return &busProbe{node: node, interval: interval, base: time.Now(), hist: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "bus_round_trip_seconds",
		Help:      "How long this instance's own probe signals took through the bus and back (one at most per scrape interval, sent only while scraped): the lag of the signals that wake the instances.",
		Buckets:   DefaultBusBuckets,
	})}
}

func (p *busProbe) Describe(ch chan<- *prometheus.Desc) { p.hist.Describe(ch) }

// Collect exports the round trips measured so far and, if the last probe is older than the
// interval, sends the next; its round trip shows in a later scrape.
func (p *busProbe) Collect(ch chan<- prometheus.Metric) {
	p.hist.Collect(ch)
	b := p.node.Bus()
	if b == nil {
		return
	}
	p.mu.Lock()
	due := p.sent.IsZero() || time.Since(p.sent) >= p.interval
	if due {
		p.sent = time.Now()
		if !p.subscribed {
			p.subscribed = true
			b.Subscribe(ProbeChannel, p.received) // ends with the node's bus
		}
	}
	p.mu.Unlock()
	if !due {
		return
	}
	payload := []byte(strconv.FormatInt(int64(time.Since(p.base)), 10))
	go func() { // a scrape never waits on the bus
		ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
		defer cancel()
		if err := b.Publish(ctx, ProbeChannel, payload); err != nil {
			p.node.Logger().Debug("metrics: bus probe not sent", "err", err)
		}
	}()
}

// received times this instance's own probes; the others' are not its to time.
func (p *busProbe) received(m bus.Message) {
	if m.Lost || m.From != p.node.ID() {
		return
	}
	sent, err := strconv.ParseInt(string(m.Payload), 10, 64)
	if err != nil || sent < 0 {
		return
	}
	if d := time.Since(p.base) - time.Duration(sent); d >= 0 {
		p.hist.Observe(d.Seconds())
	}
}
