package main

import (
	"math"
	"slices"
)

// median is the middle of v, or the mean of its two middle values when their number is
// even; 0 for none. v is left as it is.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianBy is the median of f over rs: one figure of a system's rounds.
func medianBy[T any](rs []T, f func(T) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return median(v)
}

// medianOfRounds is one system's row over its rounds: the median of each figure. Its work
// and latency over time, for the page, are those of the round whose figure is nearest the
// median, so the charts show a run that happened.
func medianOfRounds(rs []row) row {
	m := rs[0]
	m.WorkPerSec = medianBy(rs, func(r row) float64 { return r.WorkPerSec })
	m.InsertPer = medianBy(rs, func(r row) float64 { return r.InsertPer })
	m.LatencyP50 = medianBy(rs, func(r row) float64 { return r.LatencyP50 })
	m.LatencyP99 = medianBy(rs, func(r row) float64 { return r.LatencyP99 })
	m.EnqueueP99 = medianBy(rs, func(r row) float64 { return r.EnqueueP99 })
	m.AfterP99 = medianBy(rs, func(r row) float64 { return r.AfterP99 })
	w := nearest(rs, m.WorkPerSec, func(r row) float64 { return r.WorkPerSec })
	m.WorkS, m.Work = w.WorkS, w.Work
	l := nearest(rs, m.LatencyP99, func(r row) float64 { return r.LatencyP99 })
	m.LatencyS, m.Latency = l.LatencyS, l.Latency
	return m
}

// nearest is the first of rs whose figure f is nearest v.
func nearest(rs []row, v float64, f func(row) float64) row {
	best := rs[0]
	for _, r := range rs[1:] {
		if math.Abs(f(r)-v) < math.Abs(f(best)-v) {
			best = r
		}
	}
	return best
}

// byRound is the rows of each round, in the systems' order.
func (res result) byRound() [][]row {
	var out [][]row
	for i, rs := range res.rounds {
		for r, rw := range rs {
			if i == 0 {
				out = append(out, make([]row, len(res.rounds)))
			}
			out[r][i] = rw
		}
	}
	return out
}

// workRatios is twice defaults' work over River tuned's in each round, each from two runs
// close in time; nil unless both ran.
func (res result) workRatios() []float64 {
	var t, r []row
	for i, rs := range res.rounds {
		switch sys := res.rows[i]; sys.System + " " + sys.Config {
		case "twice defaults":
			t = rs
		case "river tuned":
			r = rs
		}
	}
	if t == nil || r == nil {
		return nil
	}
	out := make([]float64, len(t))
	for i := range t {
		out[i] = t[i].WorkPerSec / r[i].WorkPerSec
	}
	return out
}
