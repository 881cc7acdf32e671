package cluster_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open opens a store on db with the membership and lease tables: one instance's
// connections.
func open(t *testing.T, db testdb.DB, clock store.Clock) *store.Store {
	t.Helper()
	s := db.Open(t, &store.Options{Clock: clock})
	if _, err := store.NewMigrator(s, cluster.Component(), lease.Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// member returns the membership of instance id of service "svc" on s, which leaves when t
// ends. Its heartbeat interval is an hour unless cfg says otherwise, so that only the
// test's own Beat calls move its heartbeat.
func member(t *testing.T, s *store.Store, id string, cfg cluster.Config) *cluster.Membership {
	t.Helper()
	cfg.Service, cfg.ID, cfg.Logger = "svc", id, testdb.Logger(t)
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Hour
	}
	m, err := cluster.NewMembership(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Leave(context.Background()) })
	return m
}

// only returns the one member of service "svc" as s sees it.
func only(t *testing.T, s *store.Store) cluster.Member {
	t.Helper()
	ms, err := cluster.List(context.Background(), s, "svc")
	if err != nil || len(ms) != 1 {
		t.Fatalf("members %+v, %v; want one", ms, err)
	}
	return ms[0]
}
