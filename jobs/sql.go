package jobs

import (
	"embed"
	"strings"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the job queue's schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("jobs", migrations,
		store.Table{Name: "twice_jobs", Service: "service"},
		store.Table{Name: "twice_job_keys", Service: "service"},
		store.Table{Name: "twice_queues", Service: "service"},
		store.Table{Name: "twice_queue_workers", Service: "service"},
		store.Table{Name: "twice_queue_starts", Service: "service"})
}

// rowCols are the columns an engine's scanRow reads, in order.
const rowCols = `id, queue, kind, args, state, priority, run_at, attempt, max_attempts, owner, key, unique_key,
batch_id, timeout_ms, cancel_requested, tags, meta, last_error, created_at, attempted_at, finished_at`

// limitedCol says whether a twice_queues row sets a cluster-wide limit: a queue fetched by
// the limited path, which takes turns (see pgFetch).
const limitedCol = `(global_limit > 0 OR rate_limit > 0)`

// fetchCols are the columns a fetch returns, read by an engine's scanFetched: what a worker
// sees of its job. The rest of a row is known (running, owned here) or does not matter to it.
const fetchCols = `id, queue, kind, args, priority, run_at, attempt, max_attempts, key, unique_key, batch_id, timeout_ms,
tags, meta, last_error, created_at, attempted_at`

// queries are the job queue's statements, written once in the store's template (see
// [store.Store.SQL]: {now}, {ms …}, casts, {in $N TYPE}, {pg …}/{sqlite …}). In each, $1 is
// "now": NULL for database time, or a test clock's time. What only one dialect runs, because
// its engine works differently (pg.go, sqlite.go), is in that dialect's set; the other's is
// empty.
type queries struct {
	// enqueueing
	insert, existing, now string
	// working
	limits, limitedQ, setLimit, cancelRequested, due string
	// rate limits (see rate.go)
	setRate, forgetStarts, pruneStarts, startsIn, rateCandidates, recordStarts string
	// upkeep
	prune, releaseBatches, batchBackstop string
	// administration
	cancel, discard, retry, get, pause, stats, tagFilter, argsFilter string
	// twice_queue_workers (see queues.go)
	announce, withdraw, workers, pruneWorkers string

	pg     pgStatements
	sqlite sqliteStatements
}

// sharedQueries are the statements both dialects run, as written (workers is filled in by
// [templates]: whether an instance is alive is spelled per dialect by package cluster).
var sharedQueries = queries{
	insert: `
INSERT INTO twice_jobs (service, queue, kind, args, state, priority, run_at, max_attempts, key, unique_key,
	unique_states, batch_id, timeout_ms, tags, meta, created_at)
VALUES ($2, $3, $4, $5, $6, $7, coalesce($8::timestamptz, {now}) + {ms $9::bigint},
	$10, $11, $12, $13, $14, $15, $16, $17, {now})
ON CONFLICT DO NOTHING
RETURNING id`,
	existing: `SELECT id FROM twice_jobs WHERE service = $1 AND unique_key = $2 AND (unique_states & state) <> 0`,
	now:      `SELECT {now}`,
	// limits reads a queue's cluster-wide limits and, if it has a global limit (stored, or
	// $3, the fetching instance's own), its running jobs, under the queue's turn.
	limits: `
SELECT coalesce(q.global_limit, 0), coalesce(q.rate_limit, 0), coalesce(q.rate_period_ms, 0), coalesce(q.rate_field, ''),
       CASE WHEN q.global_limit > 0 OR $3::int > 0
            THEN (SELECT count(*) FROM twice_jobs WHERE service = $1 AND queue = $2 AND state = 2) ELSE 0 END
FROM (SELECT 1 AS one) AS o LEFT JOIN twice_queues q ON q.service = $1 AND q.name = $2`,
	limitedQ: `SELECT coalesce((SELECT ` + limitedCol + ` FROM twice_queues WHERE service = $1 AND name = $2), false)`,
	setLimit: `
INSERT INTO twice_queues (service, name, paused, global_limit, updated_at) VALUES ($2, $3, false, $4, {now})
ON CONFLICT (service, name) DO UPDATE SET global_limit = excluded.global_limit, updated_at = excluded.updated_at`,
	setRate: `
INSERT INTO twice_queues (service, name, paused, rate_limit, rate_period_ms, rate_field, updated_at)
VALUES ($2, $3, false, $4, $5, $6, {now})
ON CONFLICT (service, name) DO UPDATE SET rate_limit = excluded.rate_limit, rate_period_ms = excluded.rate_period_ms,
	rate_field = excluded.rate_field, updated_at = excluded.updated_at`,
	forgetStarts: `DELETE FROM twice_queue_starts WHERE service = $1 AND queue = $2`,
	// The rate statements run under the queue's turn, with $1 the time read under it.
	pruneStarts: `DELETE FROM twice_queue_starts WHERE service = $2 AND queue = $3 AND started_at <= {now} - {ms $4::bigint}`,
	startsIn: `
SELECT rate_key, count(*), min(started_at) FROM twice_queue_starts
WHERE service = $2 AND queue = $3 AND started_at > {now} - {ms $4::bigint}
GROUP BY rate_key`,
	// rateCandidates lists available jobs with their rate key ($4 names the args field),
	// passing over the keys at their limit ($5, a list: see [store.Store.List]).
	rateCandidates: `
SELECT id, k FROM (
	SELECT id, priority, run_at, coalesce({pg args->>$4::text}{sqlite CAST(json_extract(args, '$.' || $4) AS TEXT)}, '') AS k
	FROM twice_jobs
	WHERE service = $2 AND queue = $3 AND state = 1 AND run_at <= {now}
) c
WHERE k {notin $5 text}
ORDER BY priority, run_at, id
LIMIT $6`,
	// recordStarts records the starts of a fetch, one per rate key in $4 (a list).
	recordStarts: `
INSERT INTO twice_queue_starts (service, queue, rate_key, started_at)
SELECT $2, $3, k.value, {now} FROM {pg unnest($4::text[]) AS k(value)}{sqlite json_each($4) AS k}`,
	cancelRequested: `SELECT id FROM twice_jobs WHERE service = $1 AND state = 2 AND owner = $2 AND cancel_requested`,
	// due is how long until the queue's first available job may run (at most zero when one
	// may run now), and whether it has one: how long a quiet producer may sleep. Priority
	// leads the fetch index, so the walk takes each priority present with one probe (from
	// the lowest up) and its earliest run_at with one more, never the queue's whole range.
	// PostgreSQL indexes keyed and unkeyed jobs apart, so it walks them apart; SQLite's one
	// index holds both, and a filter on key, a column it lacks, would read every row.
	due: `
WITH RECURSIVE plain(p) AS (
	SELECT min(priority) FROM twice_jobs WHERE service = $2 AND queue = $3 AND state = 1{pg  AND key IS NULL}
	UNION ALL
	SELECT (SELECT min(priority) FROM twice_jobs
	        WHERE service = $2 AND queue = $3 AND state = 1{pg  AND key IS NULL} AND priority > plain.p)
	FROM plain WHERE plain.p IS NOT NULL
),
keyed(p) AS (
	SELECT min(priority) FROM twice_jobs WHERE service = $2 AND queue = $3 AND state = 1 AND key IS NOT NULL{sqlite  AND false}
	UNION ALL
	SELECT (SELECT min(priority) FROM twice_jobs
	        WHERE service = $2 AND queue = $3 AND state = 1 AND key IS NOT NULL{sqlite  AND false} AND priority > keyed.p)
	FROM keyed WHERE keyed.p IS NOT NULL
),
heads(at) AS (
	SELECT (SELECT min(run_at) FROM twice_jobs
	        WHERE service = $2 AND queue = $3 AND state = 1{pg  AND key IS NULL} AND priority = plain.p)
	FROM plain WHERE plain.p IS NOT NULL
	UNION ALL
	SELECT (SELECT min(run_at) FROM twice_jobs
	        WHERE service = $2 AND queue = $3 AND state = 1 AND key IS NOT NULL{sqlite  AND false} AND priority = keyed.p)
	FROM keyed WHERE keyed.p IS NOT NULL
)
SELECT count(at), {age min(at), {now}},
       coalesce((SELECT ` + limitedCol + ` FROM twice_queues WHERE service = $2 AND name = $3), false) FROM heads`,
	prune: `
DELETE FROM twice_jobs WHERE id IN (
	SELECT id FROM twice_jobs
	WHERE service = $2 AND (
		(state = 4 AND finished_at < {now} - {ms $3::bigint}) OR
		(state = 8 AND finished_at < {now} - {ms $4::bigint}) OR
		(state = 16 AND finished_at < {now} - {ms $5::bigint}))
	LIMIT $6)`,
	// $3 is a list of callback ids: bind it with [store.Store.List].
	releaseBatches: `
UPDATE twice_jobs AS b SET state = 1, run_at = {now}
WHERE b.service = $2 AND b.id {in $3 bigint} AND b.state = 32
  AND NOT EXISTS (SELECT 1 FROM twice_jobs m WHERE m.batch_id = b.id AND m.state IN (1, 2))
RETURNING queue`,
	batchBackstop: `
UPDATE twice_jobs AS b SET state = 1, run_at = {now}
WHERE b.service = $2 AND b.state = 32
  AND NOT EXISTS (SELECT 1 FROM twice_jobs m WHERE m.batch_id = b.id AND m.state IN (1, 2))
RETURNING queue`,
	cancel: `
UPDATE twice_jobs
SET state = CASE WHEN state = 2 THEN 2 ELSE 8 END,
    cancel_requested = (state = 2),
    finished_at = CASE WHEN state = 2 THEN finished_at ELSE {now} END,
    last_error = CASE WHEN state = 2 THEN last_error ELSE 'cancelled before it ran' END
WHERE service = $2 AND id = $3 AND state IN (1, 2, 32)
RETURNING state, coalesce(owner, ''), batch_id`,
	// discard ends a job that has not started (available or waiting) as discarded; $4 is
	// its last error. A running job is left alone: only its worker can stop it.
	discard: `
UPDATE twice_jobs
SET state = 16, finished_at = {now}, last_error = $4
WHERE service = $2 AND id = $3 AND state IN (1, 32)
RETURNING batch_id`,
	retry: `
UPDATE twice_jobs
SET state = 1, run_at = {now}, finished_at = NULL, cancel_requested = false,
    max_attempts = CASE WHEN attempt >= max_attempts THEN attempt + 1 ELSE max_attempts END
WHERE service = $2 AND id = $3 AND state IN (1, 4, 8, 16)
RETURNING queue`,
	get: `SELECT ` + rowCols + ` FROM twice_jobs WHERE service = $1 AND id = $2`,
	pause: `
INSERT INTO twice_queues (service, name, paused, updated_at) VALUES ($2, $3, $4, {now})
ON CONFLICT (service, name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at`,
	// The last column is how long the group's oldest job has been due: the queue's lag,
	// for the group of available jobs whose time has come.
	stats: `
SELECT queue, state, state = 1 AND run_at > {now}, count(*)::bigint, max({age {now}, run_at}) FROM twice_jobs WHERE service = $2
GROUP BY 1, 2, 3`,
	// A condition of [Client.List]; $? becomes its parameter. Tags are a jsonb array on
	// PostgreSQL, whose ? operator the index can serve, and JSON text on SQLite.
	tagFilter: `{pg tags ? $?}{sqlite EXISTS (SELECT 1 FROM json_each(tags) WHERE value = $?)}`,
	// A condition of [Client.List]: no key of the JSON object $? (of scalars) is missing
	// from the job's arguments or has another value or type there.
	argsFilter: `NOT EXISTS (SELECT 1 FROM {pg jsonb_each($?::jsonb) AS f WHERE args -> f.key IS DISTINCT FROM f.value}` +
		`{sqlite json_each($?) AS f WHERE json_type(args, '$.' || json_quote(f.key)) IS NOT f.type` +
		` OR json_extract(args, '$.' || json_quote(f.key)) IS NOT f.value})`,
	// $4 is a list of queue names (bind it with [store.Store.List]), read as a table: an
	// array unnested on PostgreSQL, a JSON array on SQLite. "WHERE true" lets SQLite's
	// parser tell the upsert's ON CONFLICT from a join's ON.
	announce: `
INSERT INTO twice_queue_workers (service, queue, instance, started_at)
SELECT $2, q.value, $3, {now} FROM {pg unnest($4::text[]) AS q(value)}{sqlite json_each($4) AS q}
WHERE true ON CONFLICT DO NOTHING`,
	withdraw: `DELETE FROM twice_queue_workers WHERE service = $1 AND instance = $2`,
	pruneWorkers: `DELETE FROM twice_queue_workers AS w WHERE service = $1
  AND NOT EXISTS (SELECT 1 FROM twice_members m WHERE m.service = w.service AND m.id = w.instance)`,
}

// pgStatements are what only the PostgreSQL engine runs: row locks let many fetchers
// share a queue, arrays carry a whole batch in one statement, and a statement's CTEs can
// write several tables at once.
type pgStatements struct {
	insertMany, reserveIDs, turn, fetch, fetchLimited, fetchOnly, complete, completePlain, finish, handBack, rescue string
}

var pgQueries = pgStatements{
	// Bulk insert: one statement, one array per column. Unique jobs never take this path;
	// SQLite inserts one row per statement instead (see sqliteEngine.insertBulk).
	insertMany: `
INSERT INTO twice_jobs (service, queue, kind, args, state, priority, run_at, max_attempts, key, batch_id,
	timeout_ms, tags, meta, created_at)
SELECT $2, t.queue, t.kind, t.args, t.state, t.priority,
	coalesce(t.run_at, {now}) + t.delay_ms * interval '1 millisecond',
	t.max_attempts, t.key, t.batch_id, t.timeout_ms, t.tags, t.meta, {now}
FROM unnest($3::text[], $4::text[], $5::jsonb[], $6::smallint[], $7::smallint[], $8::timestamptz[], $9::bigint[],
	$10::integer[], $11::text[], $12::bigint[], $13::bigint[], $14::jsonb[], $15::jsonb[])
	AS t(queue, kind, args, state, priority, run_at, delay_ms, max_attempts, key, batch_id, timeout_ms, tags, meta)
RETURNING id`,
	// reserveIDs draws ids for a COPY (which returns none), with the database's time.
	reserveIDs: `SELECT {now}, array_agg(nextval('twice_jobs_id_seq')) FROM generate_series(1, $2)`,
	// A queue's cluster-wide limits make its fetchers take turns on this lock, held for the
	// fetch's transaction; SQLite's single writer takes turns by itself. It returns the
	// time once the turn is taken, which the turn's statements use as "now": the
	// transaction's own now() is when it began, possibly before the previous turn's starts.
	turn: `
WITH turn AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended('twice.jobs.limit.' || $2 || '.' || $3, 0)))
SELECT coalesce($1::timestamptz, clock_timestamp()) FROM turn`,
	// The fetch claims jobs in one statement. Unkeyed and keyed jobs come from their own
	// partial indexes; a keyed job runs only if it can claim its key, and ON CONFLICT waits
	// for a concurrent claim to settle, so two fetchers never both run a key. Rows locked
	// but not taken are released at commit. SQLite has neither SKIP LOCKED nor writing
	// CTEs, and needs neither (see sqliteQueries.fetch).
	//
	// gate lets the fetch claim only while the queue is not paused and the database counts
	// this instance alive: an instance resuming from a pause longer than its dead-after
	// would otherwise claim jobs that the next rescue hands to someone else at once.
	fetch:        pgFetch("paused OR "+limitedCol, ""),
	fetchLimited: pgFetch("paused", ""),
	// fetchOnly is fetchLimited among the candidates listed in $6 (see planRate).
	fetchOnly: pgFetch("paused", " AND id = ANY($6::bigint[])"),
	// complete records a batch of successful attempts: the hot path. It joins nothing: a
	// join with the unnested batch is planned as a nested loop over both whenever the owner
	// filter makes the planner expect one row, which costs n² row comparisons for a batch of
	// n (a third of a second for 1000). Each row finds its values by its place in the batch,
	// which comes sorted by id (see sortByID): width_bucket finds that place by binary
	// search. array_position would search linearly, n² comparisons again: 30 ms for a batch
	// of 2000, more than the rest of the statement.
	complete: `
WITH done AS (
	UPDATE twice_jobs
	SET state = 4, owner = NULL, finished_at = {now}, cancel_requested = false
	WHERE id = ANY($4::bigint[]) AND owner = $3 AND service = $2
	  AND attempt = ($5::integer[])[width_bucket(id, $4::bigint[])]
	RETURNING id, key, batch_id, state, queue
),
keys AS (
	DELETE FROM twice_job_keys k USING done
	WHERE done.key IS NOT NULL AND k.service = $2 AND k.key = done.key AND k.job_id = done.id
)
SELECT id, key, batch_id, state, queue FROM done`,
	// completePlain is complete for a batch in which no job holds a key.
	completePlain: `
UPDATE twice_jobs
SET state = 4, owner = NULL, finished_at = {now}, cancel_requested = false
WHERE id = ANY($4::bigint[]) AND owner = $3 AND service = $2
  AND attempt = ($5::integer[])[width_bucket(id, $4::bigint[])]
RETURNING id`,
	// finish records a batch of attempts whatever their outcome, in one statement, the same
	// way (SQLite runs one statement per attempt: see sqliteQueries.finish). Both only touch
	// an attempt still running under this owner: a completion from an instance whose
	// attempt was rescued (or handed back) changes nothing. Only a running job has an owner,
	// so the owner stands for "state = 2": spelled out, it would invite the planner to scan
	// the running index, whose dead entries grow with every finished job until vacuum,
	// instead of looking each id up in the primary key.
	//
	// A job becomes cancelled here only when its cancel_requested flag is set (or when its
	// worker cancelled it itself, state 8): an attempt interrupted by a cancellation comes
	// as "available, attempt undone", and only the flag turns it into cancelled, keeping
	// the attempt it used.
	finish: `
WITH done AS (
	UPDATE twice_jobs j
	SET state = CASE WHEN j.cancel_requested AND ($6::smallint[])[width_bucket(j.id, $4::bigint[])] = 1 THEN 8
	                 ELSE ($6::smallint[])[width_bucket(j.id, $4::bigint[])] END,
	    owner = NULL,
	    attempt = j.attempt - CASE WHEN j.cancel_requested AND ($6::smallint[])[width_bucket(j.id, $4::bigint[])] = 1 THEN 0
	                               ELSE ($9::integer[])[width_bucket(j.id, $4::bigint[])] END,
	    run_at = CASE WHEN ($6::smallint[])[width_bucket(j.id, $4::bigint[])] = 1
	                  THEN {now} + ($7::bigint[])[width_bucket(j.id, $4::bigint[])] * interval '1 millisecond'
	                  ELSE j.run_at END,
	    last_error = coalesce(($8::text[])[width_bucket(j.id, $4::bigint[])], j.last_error),
	    finished_at = CASE WHEN ($6::smallint[])[width_bucket(j.id, $4::bigint[])] = 1 AND NOT j.cancel_requested
	                       THEN NULL ELSE {now} END,
	    cancel_requested = false
	WHERE j.id = ANY($4::bigint[]) AND j.owner = $3 AND j.service = $2
	  AND j.attempt = ($5::integer[])[width_bucket(j.id, $4::bigint[])]
	RETURNING j.id, j.key, j.batch_id, j.state, j.queue
),
keys AS (
	DELETE FROM twice_job_keys k USING done
	WHERE done.key IS NOT NULL AND k.service = $2 AND k.key = done.key AND k.job_id = done.id
)
SELECT id, key, batch_id, state, queue FROM done`,
	// handBack returns a batch of attempts in one statement, by arrays sorted by id, as
	// complete does; SQLite runs one statement per attempt.
	handBack: `
UPDATE twice_jobs SET state = 1, owner = NULL, attempt = attempt - 1
WHERE id = ANY($4::bigint[]) AND owner = $3 AND service = $2
  AND attempt = ($5::integer[])[width_bucket(id, $4::bigint[])]
RETURNING id`,
	// rescue locks the jobs of dead instances, skipping those another rescuer holds, and
	// releases their keys in the same statement. SQLite's single writer needs no lock, and
	// its keys are released in Go (see sqliteQueries.rescue).
	rescue: `
WITH dead AS (
	SELECT id, owner FROM twice_jobs j
	WHERE j.service = $2 AND j.state = 2
	  AND NOT ` + cluster.Alive("j.service", "j.owner", "{now}") + `
	FOR UPDATE SKIP LOCKED
),
done AS (
	UPDATE twice_jobs j
	SET state = CASE WHEN j.cancel_requested THEN 8 WHEN j.attempt >= j.max_attempts THEN 16 ELSE 1 END,
	    owner = NULL,
	    last_error = 'instance ' || dead.owner || ' stopped while running attempt ' || j.attempt,
	    finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts THEN {now} END,
	    cancel_requested = false
	FROM dead
	WHERE j.id = dead.id
	RETURNING j.id, j.key, j.batch_id, j.state, j.queue, j.last_error, j.attempt
),
keys AS (
	DELETE FROM twice_job_keys k USING done
	WHERE done.key IS NOT NULL AND k.service = $2 AND k.key = done.key AND k.job_id = done.id
)
SELECT id, key, batch_id, state, queue, last_error, attempt FROM done`,
}

// pgFetch is the fetch statement whose gate lets it claim only while no row of the queue
// says stop (the condition on twice_queues) and the database counts this instance alive.
// The fetch without a limit stops at a limit too: a queue limited cluster-wide is fetched
// only by the limited path, which takes turns and counts (see pgEngine.fetch), whatever
// the fetching instance was configured with. only narrows the candidates further.
func pgFetch(stop, only string) string {
	return `
WITH gate AS (
	SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM twice_queues WHERE service = $2 AND name = $3 AND (` + stop + `))
	  AND ` + cluster.Alive("$2", "$5", "{now}") + `
),
plain AS (
	SELECT id, NULL::text AS key, priority, run_at FROM twice_jobs
	WHERE service = $2 AND queue = $3 AND state = 1 AND key IS NULL AND run_at <= {now}` + only + `
	  AND EXISTS (SELECT 1 FROM gate)
	ORDER BY priority, run_at, id
	LIMIT $4
	FOR UPDATE SKIP LOCKED
),
keyed AS (
	SELECT id, key, priority, run_at FROM twice_jobs j
	WHERE service = $2 AND queue = $3 AND state = 1 AND key IS NOT NULL AND run_at <= {now}` + only + `
	  AND EXISTS (SELECT 1 FROM gate)
	  AND NOT EXISTS (SELECT 1 FROM twice_job_keys k WHERE k.service = $2 AND k.key = j.key)
	ORDER BY priority, run_at, id
	LIMIT $4
	FOR UPDATE SKIP LOCKED
),
top AS (
	SELECT * FROM (SELECT * FROM plain UNION ALL SELECT * FROM keyed) c
	ORDER BY priority, run_at, id
	LIMIT $4
),
claimed AS (
	INSERT INTO twice_job_keys (service, key, job_id)
	SELECT DISTINCT ON (key) $2, key, id FROM top WHERE key IS NOT NULL ORDER BY key, priority, run_at, id
	ON CONFLICT DO NOTHING
	RETURNING job_id
)
UPDATE twice_jobs j
SET state = 2, owner = $5, attempt = j.attempt + 1, attempted_at = {now}
WHERE j.id IN (SELECT id FROM top WHERE key IS NULL UNION ALL SELECT job_id FROM claimed)
RETURNING ` + prefixed("j.", fetchCols)
}

// sqliteStatements are what only the SQLite engine runs. SQLite has one writer: a
// transaction sees everything committed before it and nothing can commit during it, so
// fetching needs no row locks, keys are claimed in Go within the fetch's transaction, and
// a batch is one statement per row inside one transaction.
type sqliteStatements struct {
	fetch, fetchLimited, fetchOnly, take, claimKey, finish, releaseKey, handBack, rescue, rescueCheck string
}

var sqliteQueries = sqliteStatements{
	// fetch lists candidates (and, with a limit of 1, tells a read whether there is work);
	// take then marks the chosen ones running, in the same transaction. As on PostgreSQL,
	// only an instance the database counts alive claims jobs.
	fetch:        sqliteFetch("paused OR "+limitedCol, ""),
	fetchLimited: sqliteFetch("paused", ""),
	fetchOnly:    sqliteFetch("paused", " AND id {in $6 bigint}"),
	// take marks the fetched ids running; $4 is their list (see [store.Store.List]).
	take: `
UPDATE twice_jobs SET state = 2, owner = $5, attempt = attempt + 1, attempted_at = {now}
WHERE id {in $4 bigint} AND service = $2 AND state = 1
RETURNING ` + fetchCols,
	// The one writer makes check-then-insert safe.
	claimKey: `INSERT INTO twice_job_keys (service, key, job_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
	// One attempt per statement, all in one transaction: SQLite would join a whole batch
	// against the table by scanning it. Cancellation as on PostgreSQL: only the flag
	// makes an interrupted attempt cancelled.
	finish: `
UPDATE twice_jobs
SET state = CASE WHEN cancel_requested AND $6 = 1 THEN 8 ELSE $6 END,
    owner = NULL,
    attempt = attempt - CASE WHEN cancel_requested AND $6 = 1 THEN 0 ELSE $9 END,
    run_at = CASE WHEN $6 = 1 THEN {now} + {ms $7} ELSE run_at END,
    last_error = coalesce($8, last_error),
    finished_at = CASE WHEN $6 = 1 AND NOT cancel_requested THEN NULL ELSE {now} END,
    cancel_requested = false
WHERE id = $4 AND attempt = $5 AND owner = $3 AND service = $2
RETURNING id, key, batch_id, state, queue`,
	releaseKey: `DELETE FROM twice_job_keys WHERE service = $1 AND key = $2 AND job_id = $3`,
	handBack: `
UPDATE twice_jobs SET state = 1, owner = NULL, attempt = attempt - 1
WHERE id = $4 AND attempt = $5 AND owner = $3 AND service = $2
RETURNING id`,
	rescue: `
UPDATE twice_jobs AS j
SET state = CASE WHEN j.cancel_requested THEN 8 WHEN j.attempt >= j.max_attempts THEN 16 ELSE 1 END,
    owner = NULL,
    last_error = 'instance ' || j.owner || ' stopped while running attempt ' || j.attempt,
    finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts THEN {now} END,
    cancel_requested = false
WHERE j.service = $2 AND j.state = 2
  AND NOT ` + cluster.Alive("j.service", "j.owner", "{now}") + `
RETURNING id, key, batch_id, state, queue, last_error, attempt`,
	// Every instance looks for dead instances' jobs every second: on SQLite the look is a
	// read, and only a rescue takes the write lock.
	rescueCheck: `
SELECT 1 FROM twice_jobs j
WHERE j.service = $2 AND j.state = 2
  AND NOT ` + cluster.Alive("j.service", "j.owner", "{now}") + `
LIMIT 1`,
}

// sqliteFetch is the fetch statement that lists candidates only while no row of the queue
// says stop (see pgFetch).
func sqliteFetch(stop, only string) string {
	return `
SELECT id, key FROM twice_jobs
WHERE service = $2 AND queue = $3 AND state = 1 AND run_at <= {now}` + only + `
  AND NOT EXISTS (SELECT 1 FROM twice_queues WHERE service = $2 AND name = $3 AND (` + stop + `))
  AND ` + cluster.Alive("$2", "$5", "{now}") + `
ORDER BY priority, run_at, id
LIMIT $4`
}

// templates are the statements of dialect d as written, before [store.Store.SQL].
func templates(d store.Dialect) *queries {
	q := sharedQueries
	q.workers = `SELECT queue, count(*) FROM twice_queue_workers w
WHERE service = $2 AND ` + cluster.Alive("w.service", "w.instance", "{now}") + `
GROUP BY queue`
	if d == store.SQLite {
		q.sqlite = sqliteQueries
	} else {
		q.pg = pgQueries
	}
	return &q
}

// queriesFor returns the statements of s's dialect as s runs them (its schema's tables
// named in full, see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) *queries {
	q := templates(s.Dialect())
	s.SQLAll(q)
	return q
}

// newEngine returns the engine of s's dialect, for c. New calls it once.
func newEngine(c *Client, s *store.Store) engine {
	if s.Dialect() == store.SQLite {
		return sqliteEngine{c}
	}
	return pgEngine{c}
}

// prefixed qualifies each column of a column list with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}
