// Package block is the contract between a twice Node and its building blocks (jobs, cron,
// events, caches, settings, sessions, idempotency, …): what a block is given, and what
// the node calls on it.
//
// A block is made at Open from [Deps] and its own Config, which it validates then; making
// it starts nothing and runs no statement. The node starts a block the first time the
// application uses it (its accessor on the Node), so a service pays only for the blocks it
// uses. A block with leader upkeep implements [Leader]; the node runs Lead on the leader
// for blocks in use. On Close the node closes the blocks it started, newest first, after
// readiness is off and before leadership and leases are released. A node crashed on
// purpose (twicetest.Crash) abandons them instead, in the same order, after its leases.
package block

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/otelx"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// Deps are what every block is given: the instance's connections to its database and to
// the rest of the cluster. Every field is set by the node; tests set what they use.
type Deps struct {
	// Store is the service's database.
	Store *store.Store
	// Bus carries signals between the instances. Nil in tests and tools that run no
	// instance: a block then polls.
	Bus bus.Bus
	// Leases are this instance's leases (partitions, locks).
	Leases *lease.Manager
	// Members is this instance's membership: who is alive.
	Members *cluster.Membership
	// Service is the service every row is scoped by.
	Service string
	// Instance is this instance's id.
	Instance string
	// Logger carries the instance id and the service. Defaults to slog.Default().
	Logger *slog.Logger
	// Backstop is how often a block looks at the database for a change whose signal may
	// have been lost, while the bus vouches for its delivery (see [bus.Delivering]); while
	// it does not, or there is no bus, the block looks at its own poll interval. Zero: always
	// at the poll interval.
	Backstop time.Duration
	// Panics counts the panics recovered from the users' code a block runs (handlers,
	// callbacks, loaders); each is also logged with its stack. Nil counts nothing.
	Panics *atomic.Int64
	// Signed says that Bus signs every message with the cluster secret and drops those that
	// do not verify (see bus.Signer). A block may then send on it what only the instances
	// may say, and that no stored state depends on: the realtime hub's messages for its
	// clients. Everything else stays a hint, signed or not.
	Signed bool
	// Tracer traces the block's messages (see package otelx). Nil, tracing off, is the
	// default.
	Tracer *otelx.Tracer
}

// WithDefaults returns d with a logger; blocks call it in their constructor.
func (d Deps) WithDefaults() Deps {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// DefaultBackstop is the default [Deps].Backstop of a node's blocks.
const DefaultBackstop = 30 * time.Second

// Poll returns how long a block's look for missed signals waits: the block's own poll
// interval poll while signals may be missed (no bus, or a bus that does not vouch for its
// delivery now), Backstop while the bus vouches. A bus that stops delivering says so with
// a Lost message: a block must make its waiting loops look again on one, so that they
// wait by the shorter interval from then on.
func (d Deps) Poll(poll time.Duration) time.Duration {
	if d.Backstop > poll && bus.Delivering(d.Bus) {
		return d.Backstop
	}
	return poll
}

// Validate reports what a block cannot work without: a store and a service, and, for
// blocks that act as this instance, its id.
func (d Deps) Validate(pkg string, needInstance bool) error {
	switch {
	case d.Store == nil:
		return fmt.Errorf("%s: Deps.Store is required", pkg)
	case d.Service == "":
		return fmt.Errorf("%s: Deps.Service is required", pkg)
	case needInstance && d.Instance == "":
		return fmt.Errorf("%s: Deps.Instance is required", pkg)
	}
	return nil
}

// Block is a building block as the node runs it.
type Block interface {
	// Start begins the block's background work. The node calls it once, when the
	// application first uses the block. It returns an error only when the block cannot
	// work at all; work that fails for a while (the database away) is retried in the
	// background.
	Start(ctx context.Context) error
	// Close ends the background work, draining what is in flight within ctx. The node
	// calls it only on a started block, once.
	Close(ctx context.Context) error
	// Abandon ends the background work as a crash of the process would, for tests that
	// crash an instance (twicetest.Crash): what runs is cancelled, not drained, and
	// nothing is written, handed back or released from then on, so what the instance
	// holds in the database (running jobs, claims, partitions, progress not yet
	// committed) is left for the others to take over once they count it dead. It waits,
	// within ctx, for the goroutines it cancelled. The node calls it instead of Close,
	// once, after it has abandoned its leases (every lease a block holds has ended here,
	// its row left as it was) and before it closes the store.
	Abandon(ctx context.Context)
}

// Leader is a block with upkeep that one instance of the service does for all (pruning,
// firing schedules). The node calls Lead in a goroutine of its own each time this
// instance is elected, while the block is in use; ctx ends with the term. Lead returns
// when ctx ends. Its work must be safe to repeat: two leaders can overlap by a moment
// (fence writes with lease.FromContext(ctx) where that matters).
type Leader interface {
	Block
	Lead(ctx context.Context)
}
