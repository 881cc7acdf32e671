package main

import (
	"slices"
	"strings"
	"testing"
)

// The median is the middle figure of an odd number of rounds and the mean of the middle two
// of an even number, whatever order the rounds came in, and leaves the figures as they were.
func TestMedian(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{30, 10, 20}, 20},
		{[]float64{40, 10, 30, 20}, 25},
		{[]float64{5, 1}, 3},
	} {
		in := append([]float64(nil), c.v...)
		if got := median(c.v); got != c.want {
			t.Errorf("median(%v) = %v, want %v", in, got, c.want)
		}
		for i := range in {
			if c.v[i] != in[i] {
				t.Errorf("median reordered %v to %v", in, c.v)
				break
			}
		}
	}
}

// Three rounds of a run: each figure's median is reported, and the work ratio's spread is
// the range of the per-round ratios, not the ratio of the extremes.
func TestRounds(t *testing.T) {
	rec := recorded()
	res := result{p: rec.p}
	work := [][]float64{{2000, 1000, 3000}, {1800, 1800, 1800}, {500, 400, 600}, {1000, 800, 1000}}
	for i, ws := range work {
		var rs []row
		for r, w := range ws {
			rw := rec.rows[i]
			rw.WorkPerSec, rw.LatencyP99, rw.WorkS = w, float64(10*(r+1)), float64(r+1)
			rs = append(rs, rw)
		}
		res.rounds = append(res.rounds, rs)
		res.rows = append(res.rows, medianOfRounds(rs))
	}
	if got := res.rows[0].WorkPerSec; got != 2000 {
		t.Errorf("twice defaults' median work %v, want 2000", got)
	}
	// Its median work is round 1's, whose series the page shows.
	if got := res.rows[0].WorkS; got != 1 {
		t.Errorf("twice defaults' work series from the round of %v s, want 1 (the median round)", got)
	}
	if got := res.rows[0].LatencyP99; got != 20 {
		t.Errorf("median p99 %v, want 20", got)
	}
	ratios := res.workRatios()
	if want := []float64{2, 1.25, 3}; !slices.Equal(ratios, want) {
		t.Errorf("per-round ratios %v, want %v", ratios, want)
	}
	c := res.comparisons()
	if len(c) == 0 || !strings.Contains(c[0], "work 2.00x (rounds 1.25x to 3.00x)") {
		t.Errorf("comparisons %q lack the medians' ratio 2.00x and the rounds' 1.25x to 3.00x", c)
	}
	byRound := res.byRound()
	if len(byRound) != 3 || len(byRound[1]) != 4 || byRound[1][0].WorkPerSec != 1000 || byRound[2][3].WorkPerSec != 1000 {
		t.Errorf("rows by round %v, want 3 rounds of the 4 systems", byRound)
	}
	// An even number of rounds: the mean of the middle two.
	if got := medianOfRounds(res.rounds[3][:2]).WorkPerSec; got != 900 {
		t.Errorf("median of two rounds %v, want 900", got)
	}
	// One round: no spread to show.
	one := recorded()
	one.rounds = [][]row{{one.rows[0]}, {one.rows[1]}, {one.rows[2]}, {one.rows[3]}}
	if c := one.comparisons(); len(c) == 0 || strings.Contains(c[0], "rounds") {
		t.Errorf("one round's comparisons %q show a spread", c)
	}
}
