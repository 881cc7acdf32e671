package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// The idle benchmark measures every instance from its own reports, and on PostgreSQL the
// server's counts too. What the figures are is for `twice bench idle`; the test checks that
// each is measured: an idle instance still heartbeats, so none can be zero.
func TestBenchIdle(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		s := db.Open(t, nil)
		spawn, err := instance.Self()
		if err != nil {
			t.Fatal(err)
		}
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc"}
		res, err := measureIdle(context.Background(), spawn, s, opts,
			idleParams{Instances: 2, Duration: 3 * time.Second, Progress: t.Output()})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.PerInstance) != 2 {
			t.Fatalf("%d instances measured, want 2", len(res.PerInstance))
		}
		for _, c := range res.PerInstance {
			if c.ID == "" || c.StatementsPerSec <= 0 || c.CPUMSPerSec <= 0 {
				t.Errorf("instance %+v: every figure is measured", c)
			}
		}
		// What the page draws over time: both instances report through the window.
		if res.WindowS[0] <= 0 || res.WindowS[1] <= res.WindowS[0] || !slices.Contains(res.Over.Instances, 2) {
			t.Errorf("window %v, instances reporting %v", res.WindowS, res.Over.Instances)
		}
		if got := res.TransactionsPerSec != nil; got != (db.Dialect == store.Postgres) {
			t.Errorf("PostgreSQL's counts present: %v on %s", got, db.Dialect)
		}
		// Other tests share the database, so its connection count may even fall while this
		// one runs; its transactions only add.
		if res.TransactionsPerSec != nil && (*res.TransactionsPerSec <= 0 || res.Connections == nil) {
			t.Errorf("PostgreSQL's counts: %v transactions/s, connections %v", *res.TransactionsPerSec, res.Connections)
		}
	})
}
