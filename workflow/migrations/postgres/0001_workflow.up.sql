-- Every workflow of a service: what it runs (name, version, input) and where it is. A
-- workflow's progress is its steps' rows; the job that runs it is in twice_jobs, keyed by
-- the workflow's id.
CREATE TABLE twice_workflows (
	service          text        NOT NULL,
	id               text        NOT NULL,
	name             text        NOT NULL,
	version          bigint      NOT NULL,
	input            text        NOT NULL,
	state            text        NOT NULL,
	cancel_requested boolean     NOT NULL DEFAULT false,
	error            text        NOT NULL DEFAULT '',
	created_at       timestamptz NOT NULL,
	updated_at       timestamptz NOT NULL,
	finished_at      timestamptz,
	PRIMARY KEY (service, id)
);
CREATE INDEX twice_workflows_state ON twice_workflows (service, state, created_at);

-- The history of a workflow's steps, by their order (seq, from 1): a completed step's
-- result, which a resumed run returns instead of running the step again, a failing step's
-- attempts, and the outcome of its compensation.
CREATE TABLE twice_workflow_steps (
	service       text        NOT NULL,
	workflow_id   text        NOT NULL,
	seq           bigint      NOT NULL,
	name          text        NOT NULL,
	state         text        NOT NULL,
	attempts      bigint      NOT NULL,
	result        text        NOT NULL DEFAULT '',
	error         text        NOT NULL DEFAULT '',
	comp_state    text        NOT NULL DEFAULT '',
	comp_attempts bigint      NOT NULL DEFAULT 0,
	comp_error    text        NOT NULL DEFAULT '',
	updated_at    timestamptz NOT NULL,
	PRIMARY KEY (service, workflow_id, seq)
);
