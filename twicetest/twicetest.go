// Package twicetest tests a service built on twice as several instances, in one test: it
// opens nodes of one service on a fresh database, checks what a transaction enqueued or
// published, and works the queues until they are empty.
//
// Each test gets its own database: a SQLite file in the test's temporary directory, or a
// schema on the PostgreSQL server named by TWICE_TEST_POSTGRES_URL, dropped when the test
// ends. [Each] runs a test on both, skipping PostgreSQL where the variable is unset.
//
// A cron schedule fires on demand with the node's own [cron.Cron.Trigger]; a job runs
// where a real instance would run it, so [Work] waits for the nodes' workers rather than
// calling them itself, and a test sees the retries, unique keys and limits it will see in
// production.
//
// Faults show what the other nodes do when one fails: [StopHeartbeats] makes a node look
// dead while it runs on, [CutBus] stops it hearing the bus, and [Crash] stops it as a
// killed process, handing nothing over, so the others rescue its jobs and take over its
// leases and leadership.
package twicetest

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// EnvPostgres names the PostgreSQL server the PostgreSQL tests run against, for example
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. Each test makes a schema of
// its own there and drops it when it ends.
const EnvPostgres = testdb.EnvPostgres

// Store is the database a test runs on.
type Store string

const (
	// SQLite is a fresh file in the test's temporary directory.
	SQLite Store = "sqlite"
	// Postgres is a fresh schema on the server EnvPostgres names; the test is skipped when
	// it is unset.
	Postgres Store = "postgres"
)

// Timings a test's nodes run with unless Options.Config sets them: heartbeats, death and
// leases in about a second instead of the production defaults' several, so a test that
// stops an instance sees the others take over quickly, yet not so short that a loaded CI
// machine takes a slow heartbeat for a death.
const (
	HeartbeatInterval = 100 * time.Millisecond
	DeadAfter         = time.Second
	LeaseTTL          = time.Second
)

// Options configures [Open].
type Options struct {
	// Store is the database. Defaults to SQLite.
	Store Store
	// Service is the service's name. Defaults to "test".
	Service string
	// Config is every node's configuration. Open sets its DSN, Schema and Name; a zero
	// HeartbeatInterval, DeadAfter or LeaseTTL takes this package's, and a nil Logger
	// writes into the test's output (shown when it fails, or with -v) from level Info.
	Config twice.Config
	// Each, if set, changes node i's configuration (from 0) before it opens: what differs
	// between the instances of a deployment, such as the address each advertises for
	// forwarding (Config.AdvertiseAddr) and the server behind it.
	Each func(i int, cfg *twice.Config)
}

// Open opens n nodes of one service on a fresh database and closes them when t ends. The
// first node migrates the schema; the others open on it, as the instances of a deployment
// do.
func Open(t testing.TB, n int, opts *Options) []*twice.Node {
	t.Helper()
	if n < 1 {
		t.Fatalf("twicetest: Open needs at least one node, not %d", n)
	}
	o := Options{}
	if opts != nil {
		o = *opts
	}
	db := newDB(t, o.Store)
	cfg := withDefaults(t, o, db)
	nodes := make([]*twice.Node, 0, n)
	for i := range n {
		cfg := cfg
		if o.Each != nil {
			o.Each(i, &cfg)
		}
		node, err := twice.Open(context.Background(), cfg)
		if err != nil {
			t.Fatalf("twicetest: opening node %d of %d: %v", i+1, n, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), loop.CloseTimeout)
			defer cancel()
			if err := node.Close(ctx); err != nil {
				t.Errorf("twicetest: closing node %s: %v", node.ID(), err)
			}
		})
		nodes = append(nodes, node)
	}
	return nodes
}

// Each runs fn as a subtest on each store: "sqlite" always, "postgres" when EnvPostgres is
// set (otherwise that subtest is skipped, saying why). fn passes its store to [Open].
func Each(t *testing.T, fn func(t *testing.T, s Store)) {
	t.Helper()
	for _, s := range []Store{SQLite, Postgres} {
		t.Run(string(s), func(t *testing.T) { fn(t, s) })
	}
}

func newDB(t testing.TB, s Store) testdb.DB {
	t.Helper()
	switch s {
	case "", SQLite:
		return testdb.New(t, store.SQLite)
	case Postgres:
		return testdb.New(t, store.Postgres)
	}
	t.Fatalf("twicetest: unknown store %q: use twicetest.SQLite or twicetest.Postgres", s)
	return testdb.DB{}
}

func withDefaults(t testing.TB, o Options, db testdb.DB) twice.Config {
	cfg := o.Config
	cfg.DSN, cfg.Schema = db.DSN, db.Schema
	cfg.Name = o.Service
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = HeartbeatInterval
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = max(DeadAfter, 2*cfg.HeartbeatInterval)
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = max(LeaseTTL, cfg.DeadAfter)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return cfg
}

// lines joins the lines of a failure message, each indented under the first.
func lines(ls []string) string {
	if len(ls) == 0 {
		return "\n  (none)"
	}
	return "\n  " + strings.Join(ls, "\n  ")
}
