-- One row per job. state is a bit (1 available, 2 running, 4 completed, 8 cancelled,
-- 16 discarded, 32 waiting for its batch), so a unique key can cover a set of states with one
-- bitmask. Times are microseconds since the epoch. A running job names its owner instance;
-- it is rescued when that owner is no longer alive, never because it has run for long.
CREATE TABLE twice_jobs (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,
	service          TEXT    NOT NULL,
	queue            TEXT    NOT NULL,
	kind             TEXT    NOT NULL,
	args             TEXT    NOT NULL,
	state            INTEGER NOT NULL,
	priority         INTEGER NOT NULL DEFAULT 0,
	run_at           INTEGER NOT NULL,
	attempt          INTEGER NOT NULL DEFAULT 0,
	max_attempts     INTEGER NOT NULL,
	owner            TEXT,
	key              TEXT,
	unique_key       TEXT,
	unique_states    INTEGER NOT NULL DEFAULT 0,
	batch_id         INTEGER,
	timeout_ms       INTEGER NOT NULL DEFAULT 0,
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	tags             TEXT,
	meta             TEXT,
	last_error       TEXT,
	created_at       INTEGER NOT NULL,
	attempted_at     INTEGER,
	finished_at      INTEGER
);
CREATE INDEX twice_jobs_fetch ON twice_jobs (service, queue, priority, run_at, id) WHERE state = 1;
CREATE INDEX twice_jobs_running ON twice_jobs (service, queue) WHERE state = 2;
CREATE UNIQUE INDEX twice_jobs_unique ON twice_jobs (service, unique_key) WHERE unique_key IS NOT NULL AND (unique_states & state) <> 0;
CREATE INDEX twice_jobs_batch ON twice_jobs (batch_id) WHERE batch_id IS NOT NULL;
-- Batch callbacks waiting for their batch to finish.
CREATE INDEX twice_jobs_waiting ON twice_jobs (service) WHERE state = 32;

-- The keys of running keyed jobs: at most one running job per key, cluster-wide.
CREATE TABLE twice_job_keys (
	service TEXT    NOT NULL,
	key     TEXT    NOT NULL,
	job_id  INTEGER NOT NULL,
	PRIMARY KEY (service, key)
) WITHOUT ROWID;

-- Queues paused cluster-wide; a queue without a row runs.
CREATE TABLE twice_queues (
	service    TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	paused     INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (service, name)
) WITHOUT ROWID;
