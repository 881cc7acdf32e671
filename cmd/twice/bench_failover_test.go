package main

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
)

func TestKillLeader(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc"}
		spawn, err := instance.Self()
		if err != nil {
			t.Fatal(err)
		}
		res, err := measureFailover(context.Background(), spawn, opts, failoverParams{Kills: 3, Progress: t.Output()})
		if err != nil {
			t.Fatal(err)
		}
		// The design bound is TTL + poll; three times that only fails when failover waits
		// for something it should not (a dead-after period, a missed wake-up), not on a
		// busy machine. The figures themselves come from `twice bench failover`.
		// What the page draws: each failover when it happened, a term per election.
		if len(res.Failovers) != 3 || len(res.Terms) < 4 || res.Failovers[0].AtS <= 0 || res.Failovers[2].AtS >= res.DurationS {
			t.Errorf("failovers %+v, terms %+v over %v s", res.Failovers, res.Terms, res.DurationS)
		}
		bound := 3 * time.Duration(res.LeaseTTLMS+res.PollMS) * time.Millisecond
		for i, f := range res.FailoversMS {
			if d := time.Duration(f * float64(time.Millisecond)); d > bound {
				t.Errorf("failover %d took %v, beyond %v", i+1, d, bound)
			}
		}
	})
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	xs := []float64{5, 1, 4, 2, 3}
	for p, want := range map[float64]float64{50: 3, 99: 5, 100: 5, 1: 1} {
		if got := percentile(xs, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty percentile")
	}
}
