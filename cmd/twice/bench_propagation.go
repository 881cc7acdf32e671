package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/settings"
)

// benchPropagation runs `twice bench invalidation` and `twice bench config`: how long a
// change committed on one instance takes to reach every instance.
func benchPropagation(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench "+kind, flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	count := fs.Int("count", 200, "how many changes to time, one at a time")
	instances := fs.Int("instances", 3, "instances to run, the writer included")
	interval := fs.Duration("interval", 10*time.Millisecond, "pause between two timed changes")
	burst := 0
	if kind == kindInvalidation {
		fs.IntVar(&burst, "burst", 2000, "invalidations sent back to back afterwards, for throughput (0: none)")
	}
	busURL := fs.String("bus", "", "signal over NATS (nats://host:port) instead of the store-native bus")
	signed := fs.Bool("signed", false, "sign every bus message with a random cluster secret (Config.ClusterSecret)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rep := addReport(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *count < 1 || *count > 100000:
		return fmt.Errorf("%w: bench %s: --count must be 1 to 100000", errUsage, kind)
	case *instances < 2 || *instances > 50:
		return fmt.Errorf("%w: bench %s: --instances must be 2 to 50", errUsage, kind)
	case *interval < 0 || *interval > time.Minute:
		return fmt.Errorf("%w: bench %s: --interval must be 0 to 1m", errUsage, kind)
	case burst < 0 || burst > 1000000:
		return fmt.Errorf("%w: bench %s: --burst must be 0 to 1000000", errUsage, kind)
	}
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
	e, err := newBenchEnv(ctx, &db, kind, *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	s, dsn, service, spawn, progress := e.store, e.dsn, e.service, e.spawn, e.progress
	secret, over := benchBus(*busURL, *signed)
	fmt.Fprintf(progress, "bench %s: %d instances of %s on %s over %s, %d changes\n", kind, *instances, service, s, over, *count)
	res, err := measurePropagation(ctx, spawn, instance.Options{DSN: dsn, Schema: db.schema, Service: service, Bus: *busURL, ClusterSecret: secret},
		propagationParams{Kind: kind, Instances: *instances, Count: *count, Interval: *interval, Burst: burst, Progress: progress})
	if err != nil {
		return err
	}
	return rep.finish(stdout, progress, *asJSON, res)
}

// bus names the bus, and whether its messages were signed.
func (r propagationResult) bus() string {
	if r.Signed {
		return r.Bus + " (signed)"
	}
	return r.Bus
}

func (r propagationResult) summary() string {
	s := fmt.Sprintf("%s on %s over the %s bus, %d instances, %d changes: reaches every instance p50 %.2f ms, p99 %.2f ms, max %.2f ms; each delivery p50 %.2f ms, p99 %.2f ms",
		r.Kind, r.Store, r.bus(), r.Instances, r.Count, r.EveryP50MS, r.EveryP99MS, r.EveryMaxMS, r.EachP50MS, r.EachP99MS)
	if r.Burst > 0 {
		s += fmt.Sprintf("\nburst: %d invalidations from 4 writers reached every instance at %.0f/s", r.Burst, r.BurstPerSec)
	}
	if r.Lost > 0 {
		s += fmt.Sprintf("\nthe bus reported %d losses (each flushed a cache)", r.Lost)
	}
	return s
}

// page shows every timed change's time to reach every instance, over the percentiles of
// every single delivery, then the burst's rate and the figures.
func (r propagationResult) page() *report.Page {
	what := map[string]string{kindInvalidation: "a cache invalidation (InvalidateTx)", kindConfig: "a setting (SetTx)"}[r.Kind]
	span := 0.0
	if len(r.ChangesAtS) > 0 {
		span = r.ChangesAtS[len(r.ChangesAtS)-1]
	}
	every := report.Series{Name: "every instance, each change", Style: "dots", X: r.ChangesAtS, Y: r.EveryMS}
	sections := []report.Section{{ID: "changes", Heading: "Commit to every instance",
		Charts: []report.Chart{{ID: "changes-chart", Label: "each change's time to reach every instance", Span: span, YUnit: "ms", Log: true,
			Series: append([]report.Series{every}, r.EachLatency.Series("each delivery", 1)...)}},
		Note: fmt.Sprintf("Each dot is one change: the time from the start of its commit until the last instance applied it, at the time of the commit. "+
			"The lines are the 50th (thin), 95th (dashed) and 99th (thick) percentile of every single delivery, to each instance, of the changes committed in each bucket of %g s. Logarithmic.", r.EachLatency.BucketS)}}
	rows := []figure{{"every instance p50", msText(r.EveryP50MS, 2)}, {"every instance p99", msText(r.EveryP99MS, 2)}, {"every instance max", msText(r.EveryMaxMS, 2)},
		{"each delivery p50", msText(r.EachP50MS, 2)}, {"each delivery p99", msText(r.EachP99MS, 2)}, {"losses the bus reported", strconv.Itoa(r.Lost)}}
	if r.Burst > 0 {
		rows = append(rows, figure{"burst", fmt.Sprintf("%s invalidations at %s /s", report.Format(float64(r.Burst), 0), report.Format(r.BurstPerSec, 0))})
		done := report.Series{Name: "reached every instance", Color: 2}
		for _, c := range r.BurstDone {
			done.X, done.Y = append(done.X, c.At), append(done.Y, float64(c.N))
		}
		sections = append(sections, report.Section{ID: "burst", Heading: "Burst", Charts: []report.Chart{{ID: "burst-chart", Label: "invalidations that reached every instance over the burst",
			YUnit: "invalidations", Series: []report.Series{done}}},
			Note: fmt.Sprintf("%d invalidations from 4 writers back to back: how many had reached every instance, each counted when its last instance applied it, from the start of the burst. The slope is the rate.", r.Burst)})
	}
	sections = append(sections, report.Section{ID: "figures-section", Heading: "Figures", Tables: []report.Table{figures(rows...)}})
	return &report.Page{Title: fmt.Sprintf("twice bench %s: %s, %s bus", r.Kind, r.Store, r.bus()), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "bus", Value: r.bus()}, {Name: "instances", Value: fmt.Sprintf("%d, the writer included", r.Instances)},
			{Name: "change", Value: fmt.Sprintf("%s, %d times, one at a time", what, r.Count)}},
		Sections: sections}
}

// Propagation kinds measured by [measurePropagation].
const (
	// kindInvalidation measures cache.InvalidateTx: from the commit to each instance
	// having applied the invalidation.
	kindInvalidation = "invalidation"
	// kindConfig measures settings.SetTx: from the commit to each instance's watcher
	// being called with the new version.
	kindConfig = "config"
)

// propagationParams configure [measurePropagation].
type propagationParams struct {
	// Kind is [kindInvalidation] or [kindConfig].
	Kind string
	// Instances is how many instances run, the writer included. Defaults to 3.
	Instances int
	// Count is how many changes are timed, one at a time.
	Count int
	// Interval is the pause between two timed changes. Defaults to 10 ms.
	Interval time.Duration
	// Burst, for invalidations, is how many are sent as fast as possible after the timed
	// ones, to measure throughput. 0 skips it.
	Burst int
	// Progress receives a line every tenth of the run; nil discards them.
	Progress io.Writer
}

// propagationResult is what [measurePropagation] measured. Latencies run from the start of
// the writer's commit to the moment an instance applied the change (the commit's own time
// is included, so they are upper bounds), in milliseconds on this machine's clock.
type propagationResult struct {
	Store string `json:"store"`
	Bus   string `json:"bus"`
	// Signed is set when the instances signed their bus messages (Config.ClusterSecret).
	Signed    bool   `json:"signed"`
	Kind      string `json:"kind"`
	Instances int    `json:"instances"`
	Count     int    `json:"count"`
	// Every is, per change, the time until the last instance applied it: "reaches every
	// instance".
	EveryP50MS float64 `json:"every_p50_ms"`
	EveryP99MS float64 `json:"every_p99_ms"`
	EveryMaxMS float64 `json:"every_max_ms"`
	// EveryMS are the per-change figures, in order.
	EveryMS []float64 `json:"every_ms"`
	// Each is over every single delivery, to every instance.
	EachP50MS float64 `json:"each_p50_ms"`
	EachP99MS float64 `json:"each_p99_ms"`
	// Burst and BurstPerSec: invalidations sent back to back from 4 writers, and how many
	// per second reached every instance.
	Burst       int     `json:"burst,omitempty"`
	BurstPerSec float64 `json:"burst_per_sec,omitempty"`
	// Lost counts bus losses (and the flushes they caused) the instances reported.
	Lost int `json:"lost"`
	// Over time, for the HTML report, in seconds since the first timed change: when each
	// change committed (beside EveryMS), every delivery's latency by the time of its change,
	// and, from the burst's start, how many of its invalidations had reached every instance
	// (at most burstPoints readings).
	ChangesAtS  []float64      `json:"changes_at_s"`
	EachLatency report.Latency `json:"each_over_time"`
	BurstDone   []report.Count `json:"burst_done,omitempty"`
}

// arrivals collects when each instance applied each change.
type arrivals struct {
	mu   sync.Mutex // protects at
	at   map[string]map[int]int64
	want int
}

func (a *arrivals) add(key string, slot int, t int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.at[key]
	if m == nil {
		return false
	}
	if _, dup := m[slot]; !dup {
		m[slot] = t
	}
	return true
}

func (a *arrivals) expect(keys ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range keys {
		a.at[k] = map[int]int64{}
	}
}

// complete reports whether every expected key has reached every instance.
func (a *arrivals) complete() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.at {
		if len(m) < a.want {
			return false
		}
	}
	return true
}

// missing describes the first key that has not reached every instance.
func (a *arrivals) missing() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, m := range a.at {
		if len(m) < a.want {
			return fmt.Sprintf("%s reached %d of %d instances", k, len(m), a.want)
		}
	}
	return "none missing"
}

func (a *arrivals) take(key string) map[int]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.at[key]
	delete(a.at, key)
	return m
}

// measurePropagation runs p.Instances-1 child instances plus a writer instance in this
// process, then p.Count times changes something (a cache invalidation or a setting) in a
// transaction and times how long until every instance, the writer included, has applied it.
func measurePropagation(ctx context.Context, spawn instance.Spawner, opts instance.Options, p propagationParams) (propagationResult, error) {
	if p.Kind != kindInvalidation && p.Kind != kindConfig {
		return propagationResult{}, fmt.Errorf("propagation: unknown kind %q", p.Kind)
	}
	if p.Count < 1 {
		return propagationResult{}, fmt.Errorf("propagation: need at least one change, not %d", p.Count)
	}
	if p.Instances == 0 {
		p.Instances = 3
	}
	if p.Interval == 0 {
		p.Interval = 10 * time.Millisecond
	}
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	res := propagationResult{Kind: p.Kind, Instances: p.Instances, Count: p.Count, Bus: "store", Signed: len(opts.ClusterSecret) > 0}
	if opts.Bus != "" {
		res.Bus = "nats"
	}
	opts.Workloads = append(opts.Workloads, instance.Propagation{})
	g := instance.NewGroup(spawn, opts, nil)
	defer g.Stop(10 * time.Second)
	children := p.Instances - 1
	for i := range children {
		if _, err := g.Start(ctx, i); err != nil {
			return res, err
		}
	}
	writer, err := twice.Open(ctx, twice.Config{DSN: opts.DSN, Schema: opts.Schema, Name: opts.Service, Bus: opts.Bus,
		ClusterSecret: opts.ClusterSecret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return res, err
	}
	defer writer.Close(context.WithoutCancel(ctx))
	res.Store = string(writer.Store().Dialect())
	c, err := cache.New(writer.Caches(), instance.PropagationCache, cache.Config[string, string]{
		Load: func(_ context.Context, k string) (string, error) { return k, nil },
	})
	if err != nil {
		return res, err
	}

	// The writer is an instance too: its own deliveries go into the group's log as slot -1.
	arr := &arrivals{at: map[string]map[int]int64{}, want: p.Instances}
	event := map[string]string{kindInvalidation: "invalidated", kindConfig: "setting"}[p.Kind]
	defer writer.Caches().Observe(func(inv cache.Invalidation) {
		if inv.Cache == instance.PropagationCache && p.Kind == kindInvalidation {
			now := time.Now().UnixNano()
			for _, k := range inv.Keys {
				g.Record(instance.Event{Event: event, Key: k, T: now, Proc: -1})
			}
		}
	})()
	defer writer.Settings().WatchAll(func(v settings.Setting) {
		if p.Kind == kindConfig {
			g.Record(instance.Event{Event: event, Key: v.Key, T: time.Now().UnixNano(), Proc: -1})
		}
	})()
	_, from := g.Log()
	change := func(key string) (time.Time, error) {
		tx, err := writer.Store().Begin(ctx)
		if err != nil {
			return time.Time{}, err
		}
		if p.Kind == kindInvalidation {
			err = c.InvalidateTx(ctx, tx, key)
		} else {
			_, err = writer.Settings().SetTx(ctx, tx, key, time.Now().UnixNano(), nil)
		}
		if err != nil {
			_ = tx.Rollback(ctx)
			return time.Time{}, err
		}
		t0 := time.Now()
		return t0, tx.Commit(ctx)
	}
	// wait reads the children's events until every expected key reached every instance.
	wait := func() error {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var exited error
		_, at, err := g.WaitFor(wctx, from, func(e instance.Event) bool {
			switch {
			case e.Event == event:
				arr.add(e.Key, e.Proc, e.T)
			case e.Event == "lost":
				res.Lost++
			case e.Event == "exited":
				exited = fmt.Errorf("propagation: instance %d exited: %s", e.Proc, e.Err)
				return true
			}
			return arr.complete()
		})
		if err != nil {
			return fmt.Errorf("propagation: not every instance applied the change (%s): %w", arr.missing(), err)
		}
		from = at + 1
		return exited
	}

	run := "bench-" + randHex(3)
	var every, each []float64
	var first time.Time // the first timed change's commit
	var eachAt []report.Sample
	const warmup = 5
	for i := -warmup; i < p.Count; i++ {
		key := run + "." + strconv.Itoa(i+warmup)
		arr.expect(key)
		t0, err := change(key)
		if err != nil {
			return res, err
		}
		if err := wait(); err != nil {
			return res, err
		}
		if i == 0 {
			first = t0
		}
		slowest := 0.0
		for _, t := range arr.take(key) {
			d := ms(time.Duration(t - t0.UnixNano()))
			slowest = max(slowest, d)
			if i >= 0 {
				each = append(each, d)
				eachAt = append(eachAt, report.Sample{At: t0.Sub(first).Seconds(), MS: d})
			}
		}
		if i >= 0 {
			every = append(every, slowest)
			res.ChangesAtS = append(res.ChangesAtS, t0.Sub(first).Seconds())
			if (i+1)%max(1, p.Count/10) == 0 {
				fmt.Fprintf(p.Progress, "%s %d/%d: reached every instance in %.2f ms\n", p.Kind, i+1, p.Count, slowest)
			}
		}
		loop.Sleep(ctx, p.Interval)
	}
	res.EveryMS = every
	res.EveryP50MS, res.EveryP99MS, res.EveryMaxMS = percentile(every, 50), percentile(every, 99), percentile(every, 100)
	res.EachP50MS, res.EachP99MS = percentile(each, 50), percentile(each, 99)
	res.EachLatency = report.LatencyOver(eachAt, res.ChangesAtS[len(res.ChangesAtS)-1])

	if p.Kind == kindInvalidation && p.Burst > 0 {
		keys := make([]string, p.Burst)
		for i := range keys {
			keys[i] = run + ".burst." + strconv.Itoa(i)
		}
		arr.expect(keys...)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < len(keys); i += 4 {
					if _, err := change(keys[i]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return res, err
		}
		if err := wait(); err != nil {
			return res, err
		}
		res.Burst = p.Burst
		res.BurstPerSec = float64(p.Burst) / time.Since(start).Seconds()
		res.BurstDone = burstDone(arr, keys, start)
		fmt.Fprintf(p.Progress, "burst: %d invalidations reached every instance in %.0f ms\n", p.Burst, ms(time.Since(start)))
	}
	return res, nil
}

// burstPoints bounds the readings of a burst's progress a page draws.
const burstPoints = 200

// burstDone is how many of the burst's keys had reached every instance over time, from
// start: each key counts when its last instance applied it.
func burstDone(arr *arrivals, keys []string, start time.Time) []report.Count {
	var done []float64
	for _, k := range keys {
		last := int64(0)
		for _, t := range arr.take(k) {
			last = max(last, t)
		}
		done = append(done, time.Unix(0, last).Sub(start).Seconds())
	}
	slices.Sort(done)
	out := []report.Count{{}}
	step := max(1, len(done)/burstPoints)
	for i := step - 1; i < len(done); i += step {
		out = append(out, report.Count{At: done[i], N: int64(i + 1)})
	}
	if last := len(done) - 1; (last+1)%step != 0 {
		out = append(out, report.Count{At: done[last], N: int64(last + 1)})
	}
	return out
}
