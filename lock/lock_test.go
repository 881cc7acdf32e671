package lock_test

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/lock"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// group is the instances of service "svc" on one database. A release by one wakes the
// waiters of all, as the node's bus does.
type group struct {
	db    testdb.DB
	clock store.Clock // nil: database time

	mu  sync.Mutex // protects all
	all []*lease.Manager
}

// instance is one instance's store and locks.
type instance struct {
	id    string
	s     *store.Store
	locks *lock.Locks
}

// join opens instance id on its own store, closed when t ends.
func (g *group) join(t *testing.T, id string) *instance {
	t.Helper()
	s := g.db.Open(t, &store.Options{Clock: g.clock})
	if _, err := store.NewMigrator(s, lease.Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: id, Logger: testdb.Logger(t),
		OnRelease: func(context.Context, []string) {
			g.mu.Lock()
			defer g.mu.Unlock()
			for _, m := range g.all {
				m.Poke()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	g.mu.Lock()
	g.all = append(g.all, m)
	g.mu.Unlock()
	return &instance{id: id, s: s, locks: lock.New(m)}
}

// each runs fn as a parallel subtest per database, with a group on it.
func each(t *testing.T, fn func(t *testing.T, g *group)) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		fn(t, &group{db: db})
	})
}
