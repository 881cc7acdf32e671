package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/store"
)

// meterBeat is how often a work run's count of jobs is read, for its jobs per second over
// time: finer than the page's buckets (a tenth of a second at the least), and an atomic
// load that often costs the run nothing.
const meterBeat = 50 * time.Millisecond

// workMeter counts the jobs a work run's handler ran, and reads the count on a beat from
// the moment the run starts working.
type workMeter struct {
	worked  atomic.Int64
	meter   *report.Meter
	onStart func() // if set, called by start before the readings begin
}

// start begins the readings; the work run calls it just before it starts the clock.
func (w *workMeter) start() {
	if w.onStart != nil {
		w.onStart()
	}
	w.meter = report.StartMeter(meterBeat, w.worked.Load)
}

// stop ends the readings and returns the jobs per second over the d the run measured; a
// run that never started has none.
func (w *workMeter) stop(d time.Duration) report.Rate {
	if w.meter == nil {
		return report.Rate{}
	}
	_, counts := w.meter.Stop()
	return report.RateOver(counts[0], d.Seconds())
}

// timed is one job of a latency run: when it was enqueued, how long until its handler
// started, and how long until the producer's call that enqueued it returned (0 where that
// was not recorded). A job whose handler started before its producer's call returned has
// returned above d.
type timed struct {
	sent     time.Time
	d        time.Duration
	returned time.Duration
}

// afterWarmup returns the jobs (or events) of lat after the first warmup sent, in the order
// they were sent.
func afterWarmup(lat []timed, warmup int) []timed {
	lat = slices.Clone(lat)
	slices.SortFunc(lat, func(a, b timed) int { return a.sent.Compare(b.sent) })
	return lat[min(warmup, len(lat)):]
}

// split is where a latency run's tail lies: the 99th percentile, in milliseconds, of the
// producer's call alone (the enqueue and its commit), and of what followed until the
// handler started (the wake-up, the fetch, the hand-off). Each is a percentile of its own,
// so the two need not add up to the run's p99. Both are 0 when the run recorded no
// producer's calls.
func split(jobs []timed) (enqueueP99, afterP99 float64) {
	var enqueue, after []time.Duration
	for _, j := range jobs {
		if j.returned == 0 {
			continue
		}
		enqueue = append(enqueue, j.returned)
		after = append(after, max(j.d-j.returned, 0))
	}
	if len(enqueue) == 0 {
		return 0, 0
	}
	return percentile(enqueue, 0.99), percentile(after, 0.99)
}

// durations are the latencies of jobs (or events), in their order.
func durations(jobs []timed) []time.Duration {
	out := make([]time.Duration, len(jobs))
	for i, j := range jobs {
		out[i] = j.d
	}
	return out
}

// percentile is the q-th quantile (0 to 1) of ds in milliseconds, by nearest rank; 0 for none.
func percentile(ds []time.Duration, q float64) float64 {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	slices.Sort(ms)
	return report.Percentile(ms, q)
}

// latencies sets r's latency figures from the jobs of its latency run: the percentiles of
// all, and over time from the first job's enqueueing.
func (r *row) latencies(jobs []timed) {
	if len(jobs) == 0 {
		return
	}
	first := slices.MinFunc(jobs, func(a, b timed) int { return a.sent.Compare(b.sent) }).sent
	ms := make([]float64, len(jobs))
	samples := make([]report.Sample, len(jobs))
	for i, j := range jobs {
		ms[i] = float64(j.d.Microseconds()) / 1000
		samples[i] = report.Sample{At: j.sent.Sub(first).Seconds(), MS: ms[i]}
		r.LatencyS = math.Max(r.LatencyS, samples[i].At)
	}
	slices.Sort(ms)
	r.LatencyP50, r.LatencyP99 = report.Percentile(ms, 0.50), report.Percentile(ms, 0.99)
	r.EnqueueP99, r.AfterP99 = split(jobs)
	r.Latency = report.LatencyOver(samples, r.LatencyS)
}

// colorOf keeps each system and configuration in one colour on every chart and table: the
// blues and greens are twice's, the orange and purple River's.
func colorOf(r row) int {
	return map[string]int{"twice defaults": 0, "twice tuned": 3, "river defaults": 1, "river tuned": 5}[r.System+" "+r.Config]
}

// name is a row's name on the page: "River tuned".
func (r row) name() string {
	return map[string]string{"twice": "twice", "river": "River"}[r.System] + " " + r.Config
}

// page shows twice and River side by side: their figures in a table, each work run's jobs
// per second over time, and the latency runs' 50th and 99th percentiles over time.
func (res result) page() *report.Page {
	p := res.p
	figures := report.Table{ID: "systems", Head: []string{"system", "work jobs/s", "bulk insert jobs/s", "latency p50", "latency p99", "settings"}}
	var colors []int
	var work, insert, p50, p99 []float64
	throughput := report.Chart{ID: "work-chart", Label: "jobs worked per second in each work run", YUnit: "jobs/s"}
	median := report.Chart{ID: "latency-p50-chart", Title: "50th percentile", YUnit: "ms", Log: true, Height: 150}
	tail := report.Chart{ID: "latency-p99-chart", Title: "99th percentile", YUnit: "ms", Log: true, Height: 150}
	for _, r := range res.rows {
		c := colorOf(r)
		colors = append(colors, c)
		work, insert, p50, p99 = append(work, r.WorkPerSec), append(insert, r.InsertPer), append(p50, r.LatencyP50), append(p99, r.LatencyP99)
		figures.Rows = append(figures.Rows, []report.Cell{report.Text(r.name()), report.Num(r.WorkPerSec, 0), report.Num(r.InsertPer, 0),
			{Text: report.Format(r.LatencyP50, 2) + " ms", Num: true}, {Text: report.Format(r.LatencyP99, 2) + " ms", Num: true}, report.Text(r.Description)})
		throughput.Series = append(throughput.Series, r.Work.Series(r.name(), c))
		throughput.Span = math.Max(throughput.Span, r.WorkS)
		// The latency's percentiles, the median on one chart and the tail on the other, each
		// a plain line named for its system.
		lat := r.Latency.Series(r.name(), c)
		for i, chart := range map[int]*report.Chart{0: &median, 2: &tail} {
			s := lat[i]
			s.Name, s.Style = r.name(), ""
			chart.Series = append(chart.Series, s)
			chart.Span = math.Max(chart.Span, r.LatencyS)
		}
	}
	for i, col := range [][]float64{work, insert, p50, p99} {
		figures.Bars(i+1, col, colors)
	}
	facts := []report.Fact{{Name: "database", Value: store.Redact(p.dsn) + ", a fresh schema per run"},
		{Name: "work", Value: fmt.Sprintf("%s pre-inserted no-op jobs drained, until each is recorded completed", report.Format(float64(p.work), 0))},
		{Name: "bulk insert", Value: fmt.Sprintf("%s jobs in batches of 5,000 (twice EnqueueMany, River InsertManyFast)", report.Format(float64(p.insert), 0))},
		{Name: "latency", Value: fmt.Sprintf("%d single jobs at %d/s, enqueue to handler start", p.latency, p.rate)}}
	if n := len(res.byRound()); n > 1 {
		facts = append(facts, report.Fact{Name: "rounds", Value: fmt.Sprintf("the median of %d rounds, the systems taking turns; the charts show the round nearest the median", n)})
	}
	if res.sqlitePerSec > 0 {
		facts = append(facts, report.Fact{Name: "twice on SQLite", Value: fmt.Sprintf("%s jobs/s, three processes working %s jobs from one file",
			report.Format(res.sqlitePerSec, 0), report.Format(float64(p.sqliteWork), 0))})
	}
	return &report.Page{Title: "Job queues side by side: twice and River v0.51.1", Summary: strings.Join(res.comparisons(), "\n"), Facts: facts,
		Sections: []report.Section{
			{ID: "figures-section", Heading: "Figures", Tables: []report.Table{figures},
				Note: "Each system in each configuration, the same runs on the same database. A bar is the figure's share of the column's largest: longer is better for throughput, shorter for latency."},
			{ID: "work", Heading: "Work over time", Charts: []report.Chart{throughput},
				Note: "Jobs worked per second in each work run, from the moment it starts working, each run on its own clock (they ran one after another), in buckets of a tenth of a second or more: a longer run has wider ones."},
			{ID: "latency", Heading: "Latency over time", Charts: []report.Chart{median, tail},
				Note: "Enqueue to handler start, by when the jobs were enqueued, each latency run on its own clock: the 50th and the 99th percentile of each bucket, on a logarithmic scale. A gap is a bucket with no job."},
		}}
}
