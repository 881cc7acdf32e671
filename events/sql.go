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

// The dialects order the log differently. PostgreSQL assigns ids before commit, so an
// event is placed by (xid, id): the id of the transaction that wrote it, then its id, and
// a read stops below the oldest transaction still running (pgFrontier). SQLite has one
// writer, whose ids are taken in commit order, so it orders by id alone, keeps no xid
// (every position's xid is 0), and holds nothing back. The statements that place events
// have a {pg …}{sqlite …} fragment for it; the rest are written once.

// columns are the columns every event query returns, in [scanEvent]'s order.
const columns = `id, topic, key, payload, headers, coalesce(stream, ''), coalesce(version, 0), {pg xid}{sqlite 0}, at`

// pgFrontier is the oldest transaction id still running: every transaction below it has
// committed or aborted, so the rows below it are final.
const pgFrontier = `pg_snapshot_xmin(pg_current_snapshot())::text::bigint`

// after says an event comes after the position (xid, id), where another condition bounds
// the index scan from below: the look for held-back events starts at the frontier, near
// the log's end. Written as a row comparison, PostgreSQL would start the scan at the
// position instead and walk every event after it.
func after(xid, id string) string {
	return "(xid > " + xid + " OR (xid = " + xid + " AND id > " + id + "))"
}

// inPartition says an event is in partition $6 of $5 (every event when $5 is 0).
const inPartition = `($5::int = 0 OR hash % $5::int = $6::int)`

// noSnapshot is a PostgreSQL snapshot in which no real transaction is visible: a read
// filtered by it skips nothing. SQLite's read binds it and ignores it.
const noSnapshot = "1:1:"

// queries are the event statements. Where a statement reads the log, $2 is the topic list
// in the form [topicArg] makes and "/*topics*/" is replaced by the condition.
type queries struct {
	insertHead, insertRow, insertTail string // $1 is now; a row is ($2…$9) shifted per row
	read, readBatch, end, visible     string
	ensureGroup, group, ensureOffset  string
	offset, commitOffset, replay      string
	positionOf, positionAt            string
	dead, listDead, countDead, lag    string
	markDead, listRedo, unmarkGone    string
	redone, redead                    string
	topics                            string
	prune, version, load, get, undo   string
	recent, recentAll                 string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	insertHead: `INSERT INTO twice_events (service, topic, key, hash, payload, headers, stream, version, at) VALUES `,
	insertRow:  `($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, {now})`,
	insertTail: ` RETURNING id`,
	// read returns the next $7 events. The reader stops at its byte budget and sizes the
	// next read's limit by what the events it read weighed, so a budget costs the query
	// nothing (a running sum in SQL made every read a fifth slower on the server). On
	// PostgreSQL it skips the events visible in the snapshot $8 (a Broadcast start's);
	// SQLite binds $3, $8 and $9 but has no use for them.
	//
	// Every row ends with two columns, held and committed (which only readBatch sets).
	// When $9 asks, PostgreSQL adds a row of id 0 first whose held says whether committed
	// events of the partition wait behind a transaction still running (at or above the
	// frontier), so the reader looks again soon. The events and the answer come from one
	// statement, so from one snapshot: a transaction that ends meanwhile is either read or
	// held, never neither. Nothing is held back on SQLite.
	read: `{pg SELECT * FROM ((}
SELECT ` + columns + `, false AS held, false AS committed FROM twice_events
WHERE service = $1 AND /*topics*/ AND {pg (xid, id) > ($3, $4) AND xid < ` + pgFrontier + `}{sqlite id > $4 AND $3 = 0 AND $9 = $9}
  AND ` + inPartition + `
  AND {pg NOT pg_visible_in_snapshot(xid::text::xid8, $8::text::pg_snapshot)}{sqlite $8 = $8}
ORDER BY {pg xid, }id LIMIT $7{pg )
UNION ALL
SELECT 0, '', '', ''::bytea, NULL, '', 0, 0, now(), $9::bool AND EXISTS (
	SELECT 1 FROM twice_events
	WHERE service = $1 AND /*topics*/ AND xid >= ` + pgFrontier + ` AND ` + after("$3", "$4") + ` AND ` + inPartition + `),
	false
WHERE $9::bool
) AS r ORDER BY xid, id}`,
	// readBatch is the reads of several partitions of one group on PostgreSQL, in one
	// statement (see readBatcher): per partition ($3 to $11 are arrays, one element each)
	// its position, its limit, whether to ask about held-back events, and the checkpoint it
	// owes, which the CTE ck writes first if the version is still the one read, at $13
	// ({now}). $12 is the group, $14 its partition count. Every row starts with its
	// partition; each partition has a row of id 0 whose held and committed answer it. One
	// statement, so one snapshot: the frontier, the events and the answers agree.
	//
	// A checkpoint written here commits without waiting for its WAL to reach the disk
	// (synchronous_commit off for the statement's transaction, set by ck for each row it
	// writes, so a read that writes none is untouched). The events come back only once the
	// statement has committed, and a quarter of the reads that bring an event at a light
	// rate carry a checkpoint: the flush made those take three times as long at the p50 and
	// twice at the p99. What a crash of PostgreSQL itself (or a failover to a standby) can
	// take back is the last moves of Shared groups' checkpoints, at most three
	// wal_writer_delay (600 ms by default), whose events are then handled again, as
	// at-least-once allows. ExactlyOnce checkpoints commit in the handler's transaction.
	readBatch: `{pg
WITH r AS (
	SELECT * FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::int[], $7::bool[], $8::bool[], $9::bigint[],
		$10::bigint[], $11::bigint[]) AS r(part, xid, id, lim, ask, owes, oxid, oid, ver)
),
ck AS (
	UPDATE twice_event_offsets o SET xid = r.oxid, id = r.oid, ver = o.ver + 1, updated_at = {now $13}
	FROM r WHERE r.owes AND o.service = $1 AND o.grp = $12 AND o.part = r.part AND o.ver = r.ver
	RETURNING o.part, set_config('synchronous_commit', 'off', true)
)
SELECT r.part, e.*, false, false FROM r CROSS JOIN LATERAL (
	SELECT ` + columns + ` FROM twice_events
	WHERE service = $1 AND /*topics*/ AND (xid, id) > (r.xid, r.id) AND xid < ` + pgFrontier + `
	  AND hash % $14::int = r.part
	ORDER BY xid, id LIMIT r.lim
) e
UNION ALL
SELECT r.part, 0, '', '', ''::bytea, NULL, '', 0, 0, now(), r.ask AND EXISTS (
	SELECT 1 FROM twice_events
	WHERE service = $1 AND /*topics*/ AND xid >= ` + pgFrontier + ` AND ` + after("r.xid", "r.id") + `
	  AND hash % $14::int = r.part),
	EXISTS (SELECT 1 FROM ck WHERE ck.part = r.part)
FROM r
ORDER BY 1, 9, 2}`,
	end: `{pg SELECT ` + pgFrontier + ` - 1, 9223372036854775807, pg_current_snapshot()::text}` +
		`{sqlite SELECT 0, coalesce(max(id), 0), '' FROM twice_events}`,
	visible: `SELECT id FROM twice_events WHERE id {in $1 bigint}`,
	ensureGroup: `
INSERT INTO twice_event_groups (service, grp, topics, partitions, mode, created_at)
VALUES ($2, $3, $4, $5, $6, {now}) ON CONFLICT DO NOTHING`,
	group: `SELECT topics, partitions, mode FROM twice_event_groups WHERE service = $1 AND grp = $2`,
	ensureOffset: `
INSERT INTO twice_event_offsets (service, grp, part, xid, id, updated_at)
VALUES ($2, $3, $4, $5, $6, {now}) ON CONFLICT DO NOTHING`,
	// offset is a partition's checkpoint, and whether dead letters of the partition wait
	// for their replay (ReplayDeadLetter): the reader handles those first. The partial
	// index twice_event_dead_replay makes the look free while none wait.
	offset: `
SELECT xid, id, ver, EXISTS (SELECT 1 FROM twice_event_dead WHERE service = $1 AND grp = $2 AND replay_part = $3)
FROM twice_event_offsets WHERE service = $1 AND grp = $2 AND part = $3`,
	commitOffset: `
UPDATE twice_event_offsets SET xid = $5, id = $6, ver = ver + 1, updated_at = {now}
WHERE service = $2 AND grp = $3 AND part = $4 AND ver = $7`,
	replay: `
UPDATE twice_event_offsets SET xid = $4, id = $5, ver = ver + 1, updated_at = {now}
WHERE service = $2 AND grp = $3`,
	positionOf: `SELECT {pg xid}{sqlite 0}, id FROM twice_events WHERE service = $1 AND id = $2`,
	positionAt: `SELECT {pg xid}{sqlite 0}, id FROM twice_events WHERE service = $1 AND /*topics*/ AND at >= $3 ORDER BY {pg xid, }id LIMIT 1`,
	dead: `
INSERT INTO twice_event_dead (service, grp, event_id, attempts, error, at)
VALUES ($2, $3, $4, $5, $6, {now}) ON CONFLICT DO NOTHING`,
	listDead: `
SELECT d.event_id, d.attempts, d.error, d.at, d.replay_part IS NOT NULL FROM twice_event_dead d
WHERE d.service = $1 AND d.grp = $2 AND d.event_id > $3 ORDER BY d.event_id LIMIT $4`,
	countDead: `SELECT count(*) FROM twice_event_dead WHERE service = $1 AND grp = $2`,
	// markDead asks for the replay of one dead letter: it records the partition of the
	// group its event is in (NULL when the event has left the log), and returns it.
	markDead: `
UPDATE twice_event_dead SET replay_part = (
	SELECT e.hash % g.partitions FROM twice_events e, twice_event_groups g
	WHERE e.service = $1 AND e.id = $3 AND g.service = $1 AND g.grp = $2)
WHERE service = $1 AND grp = $2 AND event_id = $3
RETURNING replay_part`,
	// listRedo is the events of the dead letters of partition $3 waiting for their
	// replay, in log order, at most $4.
	listRedo: `
SELECT ` + columns + ` FROM twice_events
WHERE service = $1 AND id IN (SELECT event_id FROM twice_event_dead WHERE service = $1 AND grp = $2 AND replay_part = $3)
ORDER BY {pg xid, }id LIMIT $4`,
	// unmarkGone withdraws the replays of partition $3's dead letters whose event has left
	// the log (pruned), which no reader could handle.
	unmarkGone: `
UPDATE twice_event_dead SET replay_part = NULL
WHERE service = $1 AND grp = $2 AND replay_part = $3 AND NOT EXISTS (SELECT 1 FROM twice_events e WHERE e.id = event_id)`,
	// redone removes a replayed dead letter the group has now handled.
	redone: `DELETE FROM twice_event_dead WHERE service = $1 AND grp = $2 AND event_id = $3 AND replay_part IS NOT NULL`,
	// redead keeps a replayed dead letter that failed again, with its attempts added and
	// its new error.
	redead: `
UPDATE twice_event_dead SET attempts = attempts + $5, error = $6, at = {now}, replay_part = NULL
WHERE service = $2 AND grp = $3 AND event_id = $4`,
	// topics walks the index twice_events_read from one topic to the next (each step is an
	// index probe, so the cost follows the number of topics, not of events), and for each
	// reads its latest event's id and time in log order (probes from the index's end) and
	// counts its events up to $2 (an index range of at most $2 entries).
	topics: `
WITH RECURSIVE t(topic) AS (
	SELECT (SELECT topic FROM twice_events WHERE service = $1 ORDER BY topic LIMIT 1)
	UNION ALL
	SELECT (SELECT e.topic FROM twice_events e WHERE e.service = $1 AND e.topic > t.topic ORDER BY e.topic LIMIT 1)
	FROM t WHERE t.topic IS NOT NULL
)
SELECT t.topic,
	(SELECT count(*) FROM (SELECT 1 FROM twice_events c WHERE c.service = $1 AND c.topic = t.topic LIMIT $2) n),
	(SELECT l.id FROM twice_events l WHERE l.service = $1 AND l.topic = t.topic ORDER BY {pg l.xid DESC, }l.id DESC LIMIT 1),
	(SELECT l.at FROM twice_events l WHERE l.service = $1 AND l.topic = t.topic ORDER BY {pg l.xid DESC, }l.id DESC LIMIT 1)
FROM t WHERE t.topic IS NOT NULL ORDER BY t.topic`,
	lag: `
SELECT o.part, o.updated_at, count(e.id), min(e.at)
FROM twice_event_offsets o
LEFT JOIN twice_events e ON e.service = o.service AND /*topics*/ AND {pg (e.xid, e.id) > (o.xid, o.id)}{sqlite e.id > o.id}
  AND e.hash % $3::int = o.part
WHERE o.service = $1 AND o.grp = $4
GROUP BY o.part, o.updated_at ORDER BY o.part`,
	prune: `
DELETE FROM twice_events WHERE id IN (
	SELECT id FROM twice_events
	WHERE service = $2 AND stream IS NULL AND at < {now} - {ms $3::bigint}
	LIMIT $4)`,
	version: `SELECT coalesce(max(version), 0) FROM twice_events WHERE service = $1 AND stream = $2`,
	load: `
SELECT ` + columns + ` FROM twice_events
WHERE service = $1 AND stream = $2 AND version > $3 ORDER BY version LIMIT $4`,
	get: `SELECT ` + columns + ` FROM twice_events WHERE service = $1 AND id = $2`,
	recent: `
SELECT ` + columns + ` FROM twice_events WHERE service = $1 AND topic = $2 ORDER BY id DESC LIMIT $3`,
	recentAll: `SELECT ` + columns + ` FROM twice_events WHERE service = $1 ORDER BY id DESC LIMIT $2`,
	undo:      `DELETE FROM twice_events WHERE id = $1`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}

// withTopics fills a statement's /*topics*/ placeholder with "the event's topic is one of
// the list bound to $2" for column col ("topic" or "e.topic"), as s runs it. One topic is
// an equality, which every planner turns into an index range in log order.
func withTopics(s *store.Store, q, col string, n int) string {
	cond := col + " = $2"
	if n > 1 {
		cond = s.SQL(col + " {in $2 text}")
	}
	return strings.ReplaceAll(q, "/*topics*/", cond)
}

// topicArg is the topic list to bind to $2 of a statement withTopics filled.
func topicArg(s *store.Store, topics []string) any {
	if len(topics) == 1 {
		return topics[0]
	}
	return s.List(topics)
}
