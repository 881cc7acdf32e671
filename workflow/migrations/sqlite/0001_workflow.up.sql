-- Every workflow of a service: what it runs (name, version, input) and where it is. A
-- workflow's progress is its steps' rows; the job that runs it is in twice_jobs, keyed by
-- the workflow's id. Timestamps are microseconds since the epoch.
CREATE TABLE twice_workflows (
	service          TEXT    NOT NULL,
	id               TEXT    NOT NULL,
	name             TEXT    NOT NULL,
	version          INTEGER NOT NULL,
	input            TEXT    NOT NULL,
	state            TEXT    NOT NULL,
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	error            TEXT    NOT NULL DEFAULT '',
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	finished_at      INTEGER,
	PRIMARY KEY (service, id)
);
CREATE INDEX twice_workflows_state ON twice_workflows (service, state, created_at);

-- The history of a workflow's steps, by their order (seq, from 1): a completed step's
-- result, which a resumed run returns instead of running the step again, a failing step's
-- attempts, and the outcome of its compensation.
CREATE TABLE twice_workflow_steps (
	service       TEXT    NOT NULL,
	workflow_id   TEXT    NOT NULL,
	seq           INTEGER NOT NULL,
	name          TEXT    NOT NULL,
	state         TEXT    NOT NULL,
	attempts      INTEGER NOT NULL,
	result        TEXT    NOT NULL DEFAULT '',
	error         TEXT    NOT NULL DEFAULT '',
	comp_state    TEXT    NOT NULL DEFAULT '',
	comp_attempts INTEGER NOT NULL DEFAULT 0,
	comp_error    TEXT    NOT NULL DEFAULT '',
	updated_at    INTEGER NOT NULL,
	PRIMARY KEY (service, workflow_id, seq)
);
