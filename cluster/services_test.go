package cluster_test

import (
	"context"
	"slices"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// TestServices: a service is in the cluster while it has a member or a lease its holder
// has not released, and only then.
func TestServices(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := db.Open(t, nil)
		if _, err := store.NewMigrator(s, twice.Components()...).Up(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := cluster.NewMembership(s, cluster.Config{Service: "members", ID: "a", Host: "h", Version: "v", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Leave(ctx)
		for _, svc := range []string{"holds", "released"} {
			lm, err := lease.NewManager(s, lease.Config{Service: svc, Holder: "x", Logger: testdb.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer lm.Close(ctx)
			l, err := lm.Acquire(ctx, "lock", nil)
			if err != nil {
				t.Fatal(err)
			}
			if svc == "released" {
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := cluster.Services(ctx, s)
		if want := []string{"holds", "members"}; err != nil || !slices.Equal(got, want) {
			t.Fatalf("Services = %v, %v; want %v", got, err, want)
		}
	})
}
