package events

import (
	"embed"
	"strings"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the event log's schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("events", migrations,
		store.Table{Name: "twice_events", Service: "service"},
		store.Table{Name: "twice_event_groups", Service: "service"},
		store.Table{Name: "twice_event_offsets", Service: "service"},
		store.Table{Name: "twice_event_dead", Service: "service"})
}

// columns are the columns every event query returns, in [scanEvent]'s order.
const pgColumns = `id, topic, key, payload, headers, coalesce(stream, ''), coalesce(version, 0), xid, at`
const sqliteColumns = `id, topic, key, payload, headers, coalesce(stream, ''), coalesce(version, 0), 0, at`

// pgFrontier is the oldest transaction id still running: every transaction below it has
// committed or aborted, so the rows below it are final.
const pgFrontier = `pg_snapshot_xmin(pg_current_snapshot())::text::bigint`

// noSnapshot is a PostgreSQL snapshot in which no real transaction is visible: a read
// filtered by it skips nothing.
const noSnapshot = "1:1:"

// queries are the event statements of one dialect. Where a statement reads the log, $2 is
// the topic list in the form [topicArg] makes and "/*topics*/" is replaced by the condition.
type queries struct {
	insertHead, insertRow, insertTail string // $1 is now; a row is ($2…$9) shifted per row
	read, heldBack, end, visible      string
	ensureGroup, group, ensureOffset  string
	offset, commitOffset, replay      string
	positionOf, positionAt            string
	dead, listDead, countDead, lag    string
	prune, version, load              string
}

var pgQueries = queries{
	insertHead: `INSERT INTO twice_events (service, topic, key, hash, payload, headers, stream, version, at) VALUES `,
	insertRow:  `($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, coalesce($1::timestamptz, now()))`,
	insertTail: ` RETURNING id`,
	// read returns the next $7 events. The reader stops at its byte budget and sizes the
	// next read's limit by what the events it read weighed, so a budget costs the query
	// nothing (a running sum in SQL made every read a fifth slower on the server).
	read: `
SELECT ` + pgColumns + ` FROM twice_events
WHERE service = $1 AND /*topics*/ AND (xid, id) > ($3, $4) AND xid < ` + pgFrontier + `
  AND ($5::int = 0 OR hash % $5::int = $6::int)
  AND NOT pg_visible_in_snapshot(xid::text::xid8, $8::text::pg_snapshot)
ORDER BY xid, id LIMIT $7`,
	heldBack: `
SELECT EXISTS (SELECT 1 FROM twice_events
WHERE service = $1 AND /*topics*/ AND (xid, id) > ($3, $4) AND xid >= ` + pgFrontier + `)`,
	end:     `SELECT ` + pgFrontier + ` - 1, 9223372036854775807, pg_current_snapshot()::text`,
	visible: `SELECT id FROM twice_events WHERE id = ANY($1)`,
	ensureGroup: `
INSERT INTO twice_event_groups (service, grp, topics, partitions, mode, created_at)
VALUES ($2, $3, $4, $5, $6, coalesce($1::timestamptz, now())) ON CONFLICT DO NOTHING`,
	group: `SELECT topics, partitions, mode FROM twice_event_groups WHERE service = $1 AND grp = $2`,
	ensureOffset: `
INSERT INTO twice_event_offsets (service, grp, part, xid, id, updated_at)
VALUES ($2, $3, $4, $5, $6, coalesce($1::timestamptz, now())) ON CONFLICT DO NOTHING`,
	offset: `SELECT xid, id, ver FROM twice_event_offsets WHERE service = $1 AND grp = $2 AND part = $3`,
	commitOffset: `
UPDATE twice_event_offsets SET xid = $5, id = $6, ver = ver + 1, updated_at = coalesce($1::timestamptz, now())
WHERE service = $2 AND grp = $3 AND part = $4 AND ver = $7`,
	replay: `
UPDATE twice_event_offsets SET xid = $4, id = $5, ver = ver + 1, updated_at = coalesce($1::timestamptz, now())
WHERE service = $2 AND grp = $3`,
	positionOf: `SELECT xid, id FROM twice_events WHERE service = $1 AND id = $2`,
	positionAt: `SELECT xid, id FROM twice_events WHERE service = $1 AND /*topics*/ AND at >= $3 ORDER BY xid, id LIMIT 1`,
	dead: `
INSERT INTO twice_event_dead (service, grp, event_id, attempts, error, at)
VALUES ($2, $3, $4, $5, $6, coalesce($1::timestamptz, now())) ON CONFLICT DO NOTHING`,
	listDead: `
SELECT d.event_id, d.attempts, d.error, d.at FROM twice_event_dead d
WHERE d.service = $1 AND d.grp = $2 AND d.event_id > $3 ORDER BY d.event_id LIMIT $4`,
	countDead: `SELECT count(*) FROM twice_event_dead WHERE service = $1 AND grp = $2`,
	lag: `
SELECT o.part, o.updated_at, count(e.id), min(e.at)
FROM twice_event_offsets o
LEFT JOIN twice_events e ON e.service = o.service AND /*topics*/ AND (e.xid, e.id) > (o.xid, o.id)
  AND e.hash % $3::int = o.part
WHERE o.service = $1 AND o.grp = $4
GROUP BY o.part, o.updated_at ORDER BY o.part`,
	prune: `
DELETE FROM twice_events WHERE id IN (
	SELECT id FROM twice_events
	WHERE service = $2 AND stream IS NULL AND at < coalesce($1::timestamptz, now()) - $3::bigint * interval '1 millisecond'
	LIMIT $4)`,
	version: `SELECT coalesce(max(version), 0) FROM twice_events WHERE service = $1 AND stream = $2`,
	load: `
SELECT ` + pgColumns + ` FROM twice_events
WHERE service = $1 AND stream = $2 AND version > $3 ORDER BY version LIMIT $4`,
}

const sqliteNow = store.SQLiteNow

var sqliteQueries = queries{
	insertHead: pgQueries.insertHead,
	insertRow:  `($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, coalesce($1, ` + sqliteNow + `))`,
	insertTail: pgQueries.insertTail,
	// $3 (the transaction id of a PostgreSQL position) is always 0 here.
	read: `
SELECT ` + sqliteColumns + ` FROM twice_events
WHERE service = $1 AND /*topics*/ AND id > $4 AND $3 = 0
  AND ($5 = 0 OR hash % $5 = $6) AND $8 = $8
ORDER BY id LIMIT $7`,
	// Nothing is ever held back: rows become visible in id order.
	heldBack: ``,
	end:      `SELECT 0, coalesce(max(id), 0), '' FROM twice_events`,
	visible:  `SELECT id FROM twice_events WHERE id IN (SELECT value FROM json_each($1))`,
	ensureGroup: `
INSERT INTO twice_event_groups (service, grp, topics, partitions, mode, created_at)
VALUES ($2, $3, $4, $5, $6, coalesce($1, ` + sqliteNow + `)) ON CONFLICT DO NOTHING`,
	group: pgQueries.group,
	ensureOffset: `
INSERT INTO twice_event_offsets (service, grp, part, xid, id, updated_at)
VALUES ($2, $3, $4, $5, $6, coalesce($1, ` + sqliteNow + `)) ON CONFLICT DO NOTHING`,
	offset: pgQueries.offset,
	commitOffset: `
UPDATE twice_event_offsets SET xid = $5, id = $6, ver = ver + 1, updated_at = coalesce($1, ` + sqliteNow + `)
WHERE service = $2 AND grp = $3 AND part = $4 AND ver = $7`,
	replay: `
UPDATE twice_event_offsets SET xid = $4, id = $5, ver = ver + 1, updated_at = coalesce($1, ` + sqliteNow + `)
WHERE service = $2 AND grp = $3`,
	positionOf: `SELECT 0, id FROM twice_events WHERE service = $1 AND id = $2`,
	positionAt: `SELECT 0, id FROM twice_events WHERE service = $1 AND /*topics*/ AND at >= $3 ORDER BY id LIMIT 1`,
	dead: `
INSERT INTO twice_event_dead (service, grp, event_id, attempts, error, at)
VALUES ($2, $3, $4, $5, $6, coalesce($1, ` + sqliteNow + `)) ON CONFLICT DO NOTHING`,
	listDead:  pgQueries.listDead,
	countDead: pgQueries.countDead,
	lag: `
SELECT o.part, o.updated_at, count(e.id), min(e.at)
FROM twice_event_offsets o
LEFT JOIN twice_events e ON e.service = o.service AND /*topics*/ AND e.id > o.id AND e.hash % $3 = o.part
WHERE o.service = $1 AND o.grp = $4
GROUP BY o.part, o.updated_at ORDER BY o.part`,
	prune: `
DELETE FROM twice_events WHERE id IN (
	SELECT id FROM twice_events
	WHERE service = $2 AND stream IS NULL AND at < coalesce($1, ` + sqliteNow + `) - $3 * 1000
	LIMIT $4)`,
	version: pgQueries.version,
	load: `
SELECT ` + sqliteColumns + ` FROM twice_events
WHERE service = $1 AND stream = $2 AND version > $3 ORDER BY version LIMIT $4`,
}

// templates are the statements of dialect d as written, before [store.Store.SQL].
func templates(d store.Dialect) queries {
	if d == store.SQLite {
		return sqliteQueries
	}
	return pgQueries
}

// queriesFor returns the statements of s's dialect as s runs them (its schema's tables
// named in full, see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates(s.Dialect())
	s.SQLAll(&q)
	return q
}

// topicCond is the SQL condition "the event's topic is one of the list bound to $2", for
// column col ("topic" or "e.topic"). One topic is an equality, which every planner turns
// into an index range in log order.
func topicCond(d store.Dialect, col string, n int) string {
	switch {
	case n == 1:
		return col + " = $2"
	case d == store.SQLite:
		return col + " IN (SELECT value FROM json_each($2))"
	default:
		return col + " = ANY($2)"
	}
}

// withTopics fills a query's /*topics*/ placeholder.
func withTopics(q string, d store.Dialect, col string, n int) string {
	return strings.ReplaceAll(q, "/*topics*/", topicCond(d, col, n))
}
