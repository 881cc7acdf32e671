// Package testnode opens twice nodes for tests, with timings chosen for what a test
// watches, and waits for conditions that hold eventually.
//
// It imports the root package, so only tests outside the packages the root imports (their
// _test packages, and the packages above the root) can use it.
package testnode

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
)

// Fast returns timings short enough for a test to watch deaths and failovers happen: an
// instance counts as dead 200 ms after its last heartbeat, and a leader's lease lasts
// 400 ms.
func Fast() twice.Config {
	return twice.Config{
		HeartbeatInterval: 50 * time.Millisecond,
		DeadAfter:         200 * time.Millisecond,
		LeaseTTL:          400 * time.Millisecond,
		LeaderPoll:        20 * time.Millisecond,
	}
}

// Steady returns the default lease timings with quick heartbeats, for tests that check
// exclusion rather than expiry: on a heavily loaded machine a 400 ms lease can be lost
// between renewals, which is correct behaviour but not what those tests are about.
func Steady() twice.Config { return twice.Config{HeartbeatInterval: 200 * time.Millisecond} }

// Calm returns the node defaults, for tests that need no fast failover: slow heartbeats
// keep the load they add to a shared machine low.
func Calm() twice.Config { return twice.Config{} }

// Open opens an instance of service on db with cfg, logging into t's output, and closes
// it when t ends. It sets cfg's DSN, Schema, Name and Logger.
func Open(t testing.TB, db testdb.DB, service string, cfg twice.Config) *twice.Node {
	t.Helper()
	cfg.DSN, cfg.Schema, cfg.Name, cfg.Logger = db.DSN, db.Schema, service, testdb.Logger(t)
	n, err := twice.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	return n
}

// Leaders returns those of nodes that believe they lead.
func Leaders(nodes ...*twice.Node) []*twice.Node {
	var out []*twice.Node
	for _, n := range nodes {
		if n.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// Lead returns the one node of nodes that leads, with its term's lease, both from one look
// per node; nil, nil unless exactly one leads. Ask for the lease here rather than after
// [Leaders]: on a loaded machine a short lease can be lost between two looks, and a test
// would hold a nil lease.
func Lead(nodes ...*twice.Node) (*twice.Node, *lease.Lease) {
	var leader *twice.Node
	var term *lease.Lease
	for _, n := range nodes {
		if l := n.Leader().Lease(); l != nil {
			if term != nil {
				return nil, nil
			}
			leader, term = n, l
		}
	}
	return leader, term
}

// Leading waits up to timeout until exactly one of nodes leads (see [Lead]), and returns it
// with its lease.
func Leading(t testing.TB, timeout time.Duration, nodes ...*twice.Node) (*twice.Node, *lease.Lease) {
	t.Helper()
	var leader *twice.Node
	var term *lease.Lease
	Eventually(t, timeout, "one leader, with its lease", func() bool {
		leader, term = Lead(nodes...)
		return term != nil
	})
	return leader, term
}
