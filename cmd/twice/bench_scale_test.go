package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// The scale benchmark, small: three instances through every phase. What the figures are is
// for `twice bench scale`; the test checks that each is measured.
func TestBenchScale(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		s := db.Open(t, nil)
		spawn, err := instance.Self()
		if err != nil {
			t.Fatal(err)
		}
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc"}
		res, err := measureScale(context.Background(), spawn, s, opts,
			scaleParams{Instances: 3, Idle: 3 * time.Second, Kills: 1, Jobs: 300, Progress: t.Output()})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(res.summary())
		if res.Instances != 3 || res.StartS <= 0 {
			t.Errorf("start: %+v", res)
		}
		if i := res.Idle; i.DurationS <= 0 || i.StatementsPerSecPerInstance <= 0 || i.CPUMSPerSecPerInstance <= 0 {
			t.Errorf("idle: %+v", i)
		}
		pg := db.Dialect == store.Postgres
		if got := res.Idle.TransactionsPerSec != nil; got != pg {
			t.Errorf("PostgreSQL's counts present: %v on %s", got, db.Dialect)
		}
		// Other tests share the database, so its connection count may even fall while this
		// one runs; its transactions only add.
		if pg && (*res.Idle.TransactionsPerSec <= 0 || *res.Idle.TransactionsPerSecPerInstance <= 0 ||
			res.Idle.Connections == nil || res.Idle.ConnectionsPerInstance == nil || res.PoolMaxConns <= 0 || res.MaxConnectionsPerInstance <= res.PoolMaxConns) {
			t.Errorf("PostgreSQL's figures: %+v, pool %d, %d per instance", res.Idle, res.PoolMaxConns, res.MaxConnectionsPerInstance)
		}
		if got := res.Note != ""; got == pg {
			t.Errorf("note %q on %s", res.Note, db.Dialect)
		}
		if j := res.Join; j.ReadyMS <= 0 || j.FirstSeenMS <= 0 || j.AllSeenMS < j.FirstSeenMS || j.PollMS <= 0 {
			t.Errorf("join: %+v", j)
		}
		if f := res.Failover; len(f.FailoversMS) != 1 || f.P50MS <= 0 || f.P99MS < f.P50MS || f.MaxMS < f.P99MS || f.LeaseTTLMS <= 0 {
			t.Errorf("failover: %+v", f)
		}
		if j := res.Jobs; j.Jobs != 300 || j.Completed < 300 || j.Incomplete || j.EnqueueS <= 0 || j.DurationS <= 0 || j.JobsPerSec <= 0 {
			t.Errorf("jobs: %+v", j)
		}
		// What the page draws over time.
		if len(res.Phases) != 5 || len(res.Failover.Failovers) != 1 || len(res.Jobs.Rate.PerSec) == 0 || !slices.Contains(res.Over.Instances, 3) {
			t.Errorf("over time: phases %v, failovers %v, jobs %v, instances reporting %v", res.Phases, res.Failover.Failovers, res.Jobs.Rate, res.Over.Instances)
		}
	})
}

// The connection check refuses a run the server could never hold, saying how to fix it, and
// lets a small one through.
func TestBenchScaleConnectionCheck(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	s := db.Open(t, nil)
	opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc"}
	if _, _, err := checkConnections(context.Background(), s, opts, 100_000, io.Discard); err == nil || !strings.Contains(err.Error(), "raise max_connections") {
		t.Fatalf("100,000 instances: %v", err)
	}
	if _, per, err := checkConnections(context.Background(), s, opts, 1, io.Discard); err != nil || per < 3 {
		t.Fatalf("one instance: %d connections each, %v", per, err)
	}
}
