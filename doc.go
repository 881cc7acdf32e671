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
// The building blocks are packages of their own (in parentheses, the node's method that
// hands one out). Each is made at [Open] but starts its background work only when the
// application first uses it: a service that only takes locks runs no job, cron, event or
// settings loop. The README's "What runs in the background" lists what each one runs.
//
//   - [github.com/twicehq/twice/store]: SQLite and PostgreSQL behind one querier, the
//     template every block writes its statements in once for both dialects, joining a
//     caller's transaction, database time, and the migrator that also applies an
//     application's own migrations ([Node.Store]).
//   - [github.com/twicehq/twice/bus]: signals between instances, on the store
//     (LISTEN/NOTIFY, a polled table on SQLite) or on NATS with
//     [github.com/twicehq/twice/bus/natsbus]; [github.com/twicehq/twice/bus/bustest] is the
//     suite every bus passes ([Node.Bus]).
//   - [github.com/twicehq/twice/lease]: leases with fencing tokens ([Node.Leases]).
//   - [github.com/twicehq/twice/cluster]: membership and leader election ([Node.Leader],
//     [Node.Members]).
//   - [github.com/twicehq/twice/lock]: cluster-wide locks and semaphores ([Node.Locks]).
//   - [github.com/twicehq/twice/health]: liveness and readiness endpoints ([Node.Health]).
//   - [github.com/twicehq/twice/jobs]: a transactional job queue, rescued by liveness
//     ([Node.Jobs]).
//   - [github.com/twicehq/twice/cron]: schedules firing exactly once per tick ([Node.Cron]).
//   - [github.com/twicehq/twice/workflow]: durable workflows of checkpointed steps with
//     compensations (sagas), resumed on a live instance after a crash ([Node.Workflows]).
//   - [github.com/twicehq/twice/events]: a durable event log with consumer groups and
//     event-sourced streams ([Node.Events]); [github.com/twicehq/twice/events/natsrelay]
//     relays topics to NATS JetStream.
//   - [github.com/twicehq/twice/cache]: coherent in-process caches ([Node.Caches]).
//   - [github.com/twicehq/twice/partition]: partition sets spread over the instances, one
//     fenced owner per key, and where it is ([Node.Partitions]); event groups use them.
//   - [github.com/twicehq/twice/settings]: cluster-wide configuration ([Node.Settings]).
//   - [github.com/twicehq/twice/presence]: which user is connected where, in which rooms,
//     with join and leave events on every instance ([Node.Presence]).
//   - [github.com/twicehq/twice/realtime]: a WebSocket hub whose messages reach a room or
//     a user on every instance, with a history clients resume from ([Node.Realtime]).
//   - [github.com/twicehq/twice/session]: shared HTTP sessions ([Node.Sessions]).
//   - [github.com/twicehq/twice/idempotency]: Idempotency-Key middleware
//     ([Node.Idempotency]).
//   - [github.com/twicehq/twice/occ]: optimistic concurrency and ETags ([Node.Versions]).
//   - [github.com/twicehq/twice/forward]: HTTP middleware sending a request to the
//     instance that owns its key, signed with the cluster secret ([Node.Forwarder]).
//   - [github.com/twicehq/twice/dashboard]: a web page of the cluster (instances, jobs,
//     workflows, events, cron, settings, locks) with live updates and operator actions,
//     costing the database the same for one viewer or fifty.
//   - [github.com/twicehq/twice/metrics]: Prometheus metrics of a node (jobs, leadership,
//     bus, caches, sessions, idempotency, presence) and HTTP requests by route, for
//     request-based availability.
//   - [github.com/twicehq/twice/twicetest]: tests of a service as several instances: nodes
//     on a fresh database, what a transaction enqueued or published, queues worked empty.
//
// [github.com/twicehq/twice/examples/deploy] holds HAProxy, Kubernetes and docker compose
// files for three instances, tested with HAProxy in front of real processes, and
// [github.com/twicehq/twice/examples/deploy/app], the example service they run.
// [github.com/twicehq/twice/examples/shop] is the demo shop.
//
// The `twice` command (cmd/twice) works on the same database: demo (the demo shop of
// examples/shop, three instances behind `twice run`'s proxy; `--scenario leader`: failover,
// fencing and drain), run (N instances of any command behind a health-checking proxy),
// status, migrate (up, down, status, sql), config, jobs, queues, cron, bench (failover,
// events, idle, scale, partitions, invalidation, config), check (the consistency checker:
// instances under faults, every invariant), version and help (`twice help COMMAND` for one
// command's flags).
package twice
