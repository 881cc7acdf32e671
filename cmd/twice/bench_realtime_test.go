package main

import (
	"context"
	"testing"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
)

// A small `twice bench realtime`: every message reaches every client on both instances
// (measureRealtime fails otherwise), and each figure is measured.
func TestMeasureRealtime(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		spawn, err := instance.Self()
		if err != nil {
			t.Fatal(err)
		}
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc", Workloads: []instance.Workload{instance.Realtime{}}}
		res, err := measureRealtime(context.Background(), spawn, opts,
			realtimeParams{Instances: 2, Clients: 3, Messages: 20, Rate: 100, Burst: 30, Connections: 20, Progress: t.Output()})
		if err != nil {
			t.Fatal(err)
		}
		if res.P50MS <= 0 || res.P99MS < res.P50MS || res.DeliveredPerSec <= 0 || res.ConnectionsPerInstance != 23 {
			t.Errorf("result %+v", res)
		}
		t.Logf("%s", res.summary())
	})
}
