package main

import "testing"

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
