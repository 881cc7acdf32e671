// Package conformance is the suite twice passes on every backend it runs on: instances of
// a service on SQLite or PostgreSQL, signalling each other over the store's own bus or over
// NATS. It checks what the instances of one service see of each other through the database
// and the bus: membership and readiness, leader election, locks across instances, events
// and consumer groups, caches, settings, presence, the real-time hub, jobs and queues, cron,
// workflows, forged bus messages and panics in the application's callbacks.
//
// [Exercise] runs one function per area (exerciseMembership, exerciseLeader, …), each in
// its own file; a test that a backend cannot pass says why and skips. The building blocks'
// own APIs are tested in their packages (lease, cluster, lock, …), on both databases.
package conformance

import (
	"context"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// Backend is one way of running twice: the database the instances share and the bus they
// signal each other over.
type Backend struct {
	// Dialect is the database.
	Dialect store.Dialect
	// Bus is every instance's Config.Bus: empty for the store's own bus, or a NATS URL.
	Bus string
	// ClusterSecret is every instance's Config.ClusterSecret.
	ClusterSecret []byte
	// Forge puts a raw message on the bus n listens to, as an outsider would. Defaults to
	// a raw pg_notify or twice_bus row on the store's own bus.
	Forge func(t *testing.T, n *twice.Node, channel string, payload []byte)
}

// Exercise runs the whole suite on backend. Every test makes its own database, so they
// run in parallel.
func Exercise(t *testing.T, backend Backend) {
	runAreas(t, backend, map[string]func(*testing.T, Backend){
		"Membership":     exerciseMembership,
		"Leader":         exerciseLeader,
		"Lock":           exerciseLock,
		"Events":         exerciseEvents,
		"EventsDelivery": exerciseEventsDelivery,
		"EventsReplay":   exerciseEventsReplay,
		"EventsAdmin":    exerciseEventsAdmin,
		"EventsStreams":  exerciseEventsStreams,
		"EventsBudget":   exerciseEventsBudget,
		"Cache":          exerciseCache,
		"Settings":       exerciseSettings,
		"Presence":       exercisePresence,
		"Realtime":       exerciseRealtime,
		"Jobs":           exerciseJobs,
		"JobsFlow":       exerciseJobsFlow,
		"JobsRate":       exerciseJobsRate,
		"JobsRescue":     exerciseJobsRescue,
		"Queues":         exerciseQueues,
		"Cron":           exerciseCron,
		"CronTicks":      exerciseCronTicks,
		"Workflows":      exerciseWorkflows,
		"Forged":         exerciseForged,
		"Panics":         exercisePanics,
	})
}

// ExerciseBus runs the areas whose behaviour rests on the bus (events, caches, settings,
// presence, the real-time hub and forged messages) on backend: enough to try another bus without the whole suite.
func ExerciseBus(t *testing.T, backend Backend) {
	runAreas(t, backend, map[string]func(*testing.T, Backend){
		"Events":         exerciseEvents,
		"EventsDelivery": exerciseEventsDelivery,
		"EventsReplay":   exerciseEventsReplay,
		"EventsAdmin":    exerciseEventsAdmin,
		"EventsStreams":  exerciseEventsStreams,
		"Cache":          exerciseCache,
		"Settings":       exerciseSettings,
		"Presence":       exercisePresence,
		"Realtime":       exerciseRealtime,
		"Forged":         exerciseForged,
	})
}

func runAreas(t *testing.T, backend Backend, areas map[string]func(*testing.T, Backend)) {
	for name, exercise := range areas {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			exercise(t, backend)
		})
	}
}

// test is one test of an area.
type test struct {
	name string
	run  func(t *testing.T, backend Backend)
}

// runAll runs each of tests as a parallel subtest of t.
func runAll(t *testing.T, backend Backend, tests []test) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, backend)
		})
	}
}

// config returns cfg with the backend's bus.
func (b Backend) config(cfg twice.Config) twice.Config {
	cfg.Bus, cfg.ClusterSecret = b.Bus, b.ClusterSecret
	return cfg
}

// node opens an instance of service on db with cfg and the backend's bus; it is closed
// when t ends.
func (b Backend) node(t *testing.T, db testdb.DB, service string, cfg twice.Config) *twice.Node {
	t.Helper()
	return testnode.Open(t, db, service, b.config(cfg))
}

// forge puts a raw message on the bus n listens to, as an outsider would.
func (b Backend) forge(t *testing.T, n *twice.Node, channel string, payload []byte) {
	t.Helper()
	if b.Forge == nil {
		injectStore(t, n, channel, payload)
		return
	}
	b.Forge(t, n, channel, payload)
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
