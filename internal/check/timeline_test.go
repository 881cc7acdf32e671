package check

import (
	"slices"
	"testing"
	"time"
)

func TestSeries(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	var r recorder
	for i := range 100 {
		r.add(sample{block: BlockReads, at: t0.Add(time.Duration(i) * 10 * time.Millisecond), latency: time.Duration(i+1) * time.Millisecond})
	}
	r.add(sample{block: BlockLocks, at: t0.Add(1500 * time.Millisecond), failed: true})
	r.add(sample{block: BlockLocks, at: t0.Add(-time.Second)}) // before the start: not drawn
	got := r.series(t0, t0.Add(2*time.Second), time.Second)
	if len(got) != 2 || got[0].Block != BlockReads || got[1].Block != BlockLocks {
		t.Fatalf("series %+v", got)
	}
	reads, locks := got[0], got[1]
	if !slices.Equal(reads.OK, []int{100, 0, 0}) || reads.P50[0] != 51 || reads.P99[0] != 100 || reads.P95[1] != 0 {
		t.Errorf("reads: ok %v p50 %v p99 %v p95 %v", reads.OK, reads.P50, reads.P99, reads.P95)
	}
	if !slices.Equal(locks.Failed, []int{0, 1, 0}) || locks.P50 != nil {
		t.Errorf("locks: failed %v, p50 %v (not timed: none)", locks.Failed, locks.P50)
	}
}
