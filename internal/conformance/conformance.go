// Package conformance is the suite every backend must pass: the same tests of store,
// membership, leases, leader election and locks, run once per database.
package conformance

import (
	"context"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// Exercise runs the whole suite on dialect. Every test makes its own database, so they run
// in parallel.
func Exercise(t *testing.T, dialect store.Dialect) {
	for name, part := range map[string]func(*testing.T, store.Dialect){
		"Membership":   membership,
		"Leader":       leader,
		"Lock":         locks,
		"Events":       eventsSuite,
		"EventsBudget": eventsBudget,
		"Cache":        caches,
		"Settings":     settingsPart,
		"Jobs":         jobsSuite,
		"Queues":       queuesSuite,
		"Cron":         cronSuite,
		"CronTicks":    cronTicks,
		"Forged":       forgedPart,
		"Panics":       panicsSuite,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			part(t, dialect)
		})
	}
}

// open opens a migrated store on db: one instance's connections.
func open(t *testing.T, db testdb.DB, clock store.Clock) *store.Store {
	t.Helper()
	s := db.Open(t, &store.Options{Clock: clock})
	if _, err := store.NewMigrator(s, twice.Components()...).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
