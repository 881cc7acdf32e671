// Package twice makes running a service as several instances correct by default, on the
// database the service already has: PostgreSQL in production, an embedded SQLite file on a
// laptop.
//
// Open a [Node] per process. It registers the instance, heartbeats in database time,
// elects one leader per service, and hands out the building blocks:
//
//	node, err := twice.Open(ctx, twice.Config{DSN: "postgres://…", Name: "shop"})
//	if err != nil { … }
//	defer node.Close(ctx) // drains: readiness off, leadership and locks handed over
//
//	http.Handle("/healthz", node.Health()) // also /livez and /readyz
//	node.Leader().OnElected(func(ctx context.Context) { … }) // leader-only work until ctx ends
//	node.Locks().Do(ctx, "invoice-42", nil, func(ctx context.Context) error { … })
//
// Every lease, lock and leadership carries a fencing token. A write that must not come from
// an instance that paused past its lease checks the token in its own transaction with
// [Fenced]: a stale holder gets [ErrFenced] instead of a silent double write.
//
// The packages underneath are usable on their own: [github.com/twicehq/twice/store] (the
// only place that speaks SQL dialects), [github.com/twicehq/twice/bus] (signals between
// instances), [github.com/twicehq/twice/lease],
// [github.com/twicehq/twice/cluster] (membership and leader election),
// [github.com/twicehq/twice/lock], [github.com/twicehq/twice/health] and
// [github.com/twicehq/twice/events] (a durable event log with consumer groups and
// event-sourced streams, [Node.Events]). The `twice`
// command (cmd/twice) migrates, shows cluster status, runs the demo and measures failover.
package twice
