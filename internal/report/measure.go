package report

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// MaxBuckets bounds the points of a series over time: enough to see a fault of a second in
// a run of a minute, and a run of hours draws (and weighs) no more than one of minutes.
const MaxBuckets = 100

// BucketWidth is the narrowest of 0.1, 0.2, 0.5, 1, 2, 5, 10, … seconds that cuts a run of
// span seconds into at most [MaxBuckets].
func BucketWidth(span float64) float64 {
	return math.Max(0.1, NiceCeil(span/MaxBuckets))
}

// Buckets is how many buckets of width seconds a run of span seconds covers: one more than
// fit whole, for the moment the run ends.
func Buckets(span, width float64) int {
	return int(math.Max(0, span)/width) + 1
}

// Sample is one timed operation: when it started, in seconds since the run's start, and
// how long it took, in milliseconds.
type Sample struct {
	At, MS float64
}

// Latency is a latency's percentiles over a run, per bucket of BucketS seconds from its
// start; 0 in a bucket without operations, whose Count is 0.
type Latency struct {
	BucketS float64 `json:"bucket_s"`
	Count   []int   `json:"count"`
	Percentiles
}

// Percentiles are the 50th, 95th and 99th percentiles of a latency per bucket, in
// milliseconds.
type Percentiles struct {
	P50 []float64 `json:"p50_ms,omitempty"`
	P95 []float64 `json:"p95_ms,omitempty"`
	P99 []float64 `json:"p99_ms,omitempty"`
}

// LatencyOver buckets samples taken over a run of span seconds.
func LatencyOver(samples []Sample, span float64) Latency {
	w := BucketWidth(span)
	return LatencyIn(samples, w, Buckets(span, w))
}

// LatencyIn buckets samples in n buckets of width seconds; samples outside them are left
// out.
func LatencyIn(samples []Sample, width float64, n int) Latency {
	by := make([][]float64, n)
	for _, s := range samples {
		// A sample on a bucket's edge belongs to the bucket it starts, whatever the
		// division's rounding says.
		if i := int(s.At/width + 1e-9); s.At >= 0 && i < n {
			by[i] = append(by[i], s.MS)
		}
	}
	l := Latency{BucketS: width, Count: make([]int, n), Percentiles: Percentiles{P50: make([]float64, n), P95: make([]float64, n), P99: make([]float64, n)}}
	for i, ms := range by {
		slices.Sort(ms)
		l.Count[i] = len(ms)
		l.P50[i], l.P95[i], l.P99[i] = Percentile(ms, 0.50), Percentile(ms, 0.95), Percentile(ms, 0.99)
	}
	return l
}

// Series draws l as three lines of one colour, the 50th, 95th and 99th percentile, each
// broken where a bucket had no operation. The first carries name into the legend.
func (l Latency) Series(name string, color int) []Series {
	var out []Series
	for _, p := range []struct {
		style string
		vals  []float64
	}{{"p50", l.P50}, {"p95", l.P95}, {"p99", l.P99}} {
		s := Series{Color: color, Style: p.style}
		if len(out) == 0 {
			s.Name = name
		}
		for i, v := range p.vals {
			if i < len(l.Count) && l.Count[i] == 0 {
				v = math.NaN()
			}
			s.X, s.Y = append(s.X, (float64(i)+0.5)*l.BucketS), append(s.Y, v)
		}
		out = append(out, s)
	}
	return out
}

// Percentile is the q-th quantile (0 to 1) of sorted, by nearest rank; 0 for none.
func Percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

// Count is a running total at a moment: N by At seconds since the run's start.
type Count struct {
	At float64 `json:"at_s"`
	N  int64   `json:"n"`
}

// Rate is how many things per second happened over a run, per bucket of BucketS seconds
// from its start.
type Rate struct {
	BucketS float64   `json:"bucket_s"`
	PerSec  []float64 `json:"per_sec"`
}

// RateOver is the rate of a running total read at counts (in time order) over a run of span
// seconds. Between two readings the total is taken to grow evenly, so a bucket narrower
// than the readings' beat still gets its share.
func RateOver(counts []Count, span float64) Rate {
	w := BucketWidth(span)
	return RateIn(counts, span, w, Buckets(span, w))
}

// RateIn is [RateOver] in n buckets of width seconds, for totals read less often than
// RateOver's buckets are wide.
func RateIn(counts []Count, span, width float64, n int) Rate {
	r := Rate{BucketS: width, PerSec: make([]float64, n)}
	for i := range r.PerSec {
		from, to := float64(i)*width, math.Min(float64(i+1)*width, span)
		if to > from {
			r.PerSec[i] = (totalAt(counts, to) - totalAt(counts, from)) / (to - from)
		}
	}
	return r
}

// totalAt is the running total at t, between the readings around it.
func totalAt(counts []Count, t float64) float64 {
	i, _ := slices.BinarySearchFunc(counts, t, func(c Count, t float64) int {
		switch {
		case c.At < t:
			return -1
		case c.At > t:
			return 1
		}
		return 0
	})
	switch {
	case len(counts) == 0:
		return 0
	case i == 0:
		return float64(counts[0].N)
	case i == len(counts):
		return float64(counts[i-1].N)
	}
	a, b := counts[i-1], counts[i]
	return float64(a.N) + float64(b.N-a.N)*(t-a.At)/(b.At-a.At)
}

// Series draws r as a line, a point in the middle of each bucket.
func (r Rate) Series(name string, color int) Series {
	s := Series{Name: name, Color: color}
	for i, v := range r.PerSec {
		s.X, s.Y = append(s.X, (float64(i)+0.5)*r.BucketS), append(s.Y, v)
	}
	return s
}

// Meter reads running totals on a fixed beat, from [StartMeter] until [Meter.Stop], for
// their rates over time. Reading an atomic counter every few tens of milliseconds costs
// what it measures nothing.
type Meter struct {
	start time.Time
	read  []func() int64
	loop  *loop.Loop

	mu     sync.Mutex // protects counts
	counts [][]Count
}

// StartMeter reads each of read now and every interval after.
func StartMeter(every time.Duration, read ...func() int64) *Meter {
	m := &Meter{start: time.Now(), read: read, counts: make([][]Count, len(read))}
	m.sample()
	m.loop = loop.StartEvery(every, func(context.Context) { m.sample() })
	return m
}

// sample reads every total and returns when, in seconds since the start.
func (m *Meter) sample() float64 {
	at := time.Since(m.start).Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range m.read {
		m.counts[i] = append(m.counts[i], Count{At: at, N: r()})
	}
	return at
}

// Stop reads the totals a last time and returns how long the meter ran, in seconds, and
// every reading of each total.
func (m *Meter) Stop() (span float64, counts [][]Count) {
	m.loop.Stop()
	span = m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	return span, m.counts
}
