package cluster

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the membership table's schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("cluster", migrations, store.Table{Name: "twice_members", Service: "service"})
}

// queries are the membership statements; $1 is "now" in each that reads the time.
type queries struct {
	insert, beat, setState, leave, list, reap, setKey, successor, markDead string
}

// successorOf is the live_key of the instance after $3 in the ring of the service's live
// instances that hold a liveness lock ($2 the service, ordered by id, the last followed by
// the first), or NULL when there is none but $3.
const successorOf = `(SELECT s.live_key FROM twice_members s
 WHERE s.service = $2 AND s.id <> $3 AND s.live_key IS NOT NULL
   AND s.heartbeat_at > {now} - {ms s.dead_after_ms}
 ORDER BY s.id < $3, s.id LIMIT 1)`

// latestDeath is the latest heartbeat among the dead members of service $2 other than $3
// (NULL when none is dead), which moves forward when a member goes silent. It leaves out
// $3's own row, which a statement that updates it reads as it was before: a stall of its
// own would count.
const latestDeath = `(SELECT max(d.heartbeat_at) FROM twice_members d
  WHERE d.service = $2 AND d.id <> $3 AND d.heartbeat_at <= {now} - {ms d.dead_after_ms})`

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	insert: `
INSERT INTO twice_members (service, id, host, pid, version, addr, state, dead_after_ms, started_at, heartbeat_at, live_key, report)
VALUES ($2, $3, $4, $5, $6, $7, $8, $9, {now}, {now}, $10, $11)
ON CONFLICT (service, id) DO UPDATE
SET state = excluded.state, dead_after_ms = excluded.dead_after_ms, heartbeat_at = excluded.heartbeat_at,
    live_key = excluded.live_key, report = excluded.report
RETURNING ` + latestDeath,
	// A heartbeat also tells the instance whose liveness lock to watch (the ring follows
	// the members at no extra statement) and the latest death, as registering does.
	// The heartbeat's transaction may carry lease renewals, whose row locks would keep any
	// other instance from taking those leases while this process is frozen (SIGSTOP, a
	// stalled VM) between its statements: on PostgreSQL the beat makes the server abort
	// the transaction once it sits idle for DeadAfter, as a fenced write's check does.
	// It writes the instance's report ($5, see Config.Report), which so costs nothing more.
	beat: `
UPDATE twice_members SET heartbeat_at = {now}, state = $4, report = $5
WHERE service = $2 AND id = $3
RETURNING ` + successorOf + `, ` + latestDeath + `,
       {pg set_config('idle_in_transaction_session_timeout', dead_after_ms::text, true)}{sqlite NULL}`,
	setKey:    `UPDATE twice_members SET live_key = $3 WHERE service = $1 AND id = $2`,
	successor: `SELECT ` + successorOf,
	// markDead records that the holder of liveness lock $3 is gone: its heartbeat is made
	// dead-after old, so every condition built on [Alive] counts it dead at once, and its
	// key is cleared, so it is buried once.
	markDead: `
UPDATE twice_members SET heartbeat_at = {now} - {ms dead_after_ms}, live_key = NULL
WHERE service = $2 AND live_key = $3
RETURNING id`,
	setState: `UPDATE twice_members SET state = $3 WHERE service = $1 AND id = $2`,
	leave:    `DELETE FROM twice_members WHERE service = $1 AND id = $2`,
	list: `
SELECT id, service, host, pid, version, addr, state, started_at, heartbeat_at, dead_after_ms,
       {age {now}, heartbeat_at},
       {age {now}, started_at}, report
FROM twice_members WHERE service = $2 ORDER BY started_at, id`,
	reap: `
DELETE FROM twice_members
WHERE service = $2
  AND heartbeat_at < {now} - {ms dead_after_ms + $3::bigint}`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}

// Alive is a boolean condition, written with the template's markers (see
// [store.Store.SQL]), true while the member with id idExpr of service serviceExpr is
// alive at nowExpr (usually {now}), for building blocks that rescue work by its owner's
// liveness. It names twice_members as written: build the statement that uses it with
// [store.Store.SQL].
//
// It is a scalar subquery, not EXISTS, so that it is asked again of the row a statement
// finally locks. Under READ COMMITTED, a row that FOR UPDATE (or UPDATE) finds changed by a
// transaction that committed after the statement's snapshot is checked again in its new
// version, but PostgreSQL turns [NOT] EXISTS into a join and keeps the join's answer for
// the old version: a rescue that found a job running on a dead instance would then take it
// from the live instance that had rescued and claimed it meanwhile (twice_members of the
// new owner is never looked at). A scalar subquery runs again with the new row's values.
func Alive(serviceExpr, idExpr, nowExpr string) string {
	return "(COALESCE((SELECT 1 FROM twice_members m WHERE m.service = " + serviceExpr + " AND m.id = " + idExpr +
		" AND m.heartbeat_at > " + nowExpr + " - {ms m.dead_after_ms} LIMIT 1), 0) = 1)"
}

// livenessFor returns the liveness lock of s's dialect for the instance cfg describes, or
// nil where there is none (SQLite without flock).
func livenessFor(s *store.Store, cfg Config) livenessBackend {
	if s.Dialect() == store.SQLite {
		return newFileLiveness(s.DSN().Path)
	}
	return &pgLiveness{s: s, log: cfg.Logger, name: "twice-live " + cfg.Service + " " + cfg.ID,
		watchName: "twice-watch " + cfg.Service + " " + cfg.ID}
}
