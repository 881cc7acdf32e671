package main

import (
	"context"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/report/reporttest"
	"github.com/twicehq/twice/internal/testdb"
)

// A round of `twice bench partitions` on three instances and twelve partitions: each change
// settles, a join moves the newcomer's share (three of twelve with four instances), a
// leave the leaver's, and a kill the victim's (four of twelve with three).
func TestMeasureRebalance(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		spawn, err := instance.Self()
		if err != nil {
			t.Fatal(err)
		}
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc",
			Workloads: []instance.Workload{instance.PartitionWrites{Partitions: 12, NoWrites: true}}}
		res, err := measureRebalance(context.Background(), spawn, opts, 3, 12, 1, t.Output())
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Rounds) != 1 || res.JoinMS <= 0 || res.LeaveMS <= 0 || res.KillMS <= 0 {
			t.Fatalf("result %+v", res)
		}
		// Under a stalled heartbeat a lease can run out and move more; this only fails on
		// a plan that moves partitions it need not.
		if r := res.Rounds[0]; r.JoinMoved < 3 || r.LeaveMoved < 3 || r.KillMoved < 4 {
			t.Errorf("moves %+v: fewer than the shares that had to move", r)
		}
		res.Store = string(db.Dialect)
		page, _ := reporttest.Render(t, res.page().Write)
		if !strings.Contains(page, "settled after a join") {
			t.Errorf("the page does not give the summary")
		}
	})
}
