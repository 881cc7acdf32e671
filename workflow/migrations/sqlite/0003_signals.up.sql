-- Signals sent to workflows (Engine.Signal), kept until a wait of the workflow for their
-- name takes them, oldest first: consumed_seq is then the place of that wait in the
-- workflow's history, set in the transaction that completes the wait, so that each signal
-- is taken once. sent_at is microseconds since the epoch.
CREATE TABLE twice_workflow_signals (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	service      TEXT    NOT NULL,
	workflow_id  TEXT    NOT NULL,
	name         TEXT    NOT NULL,
	payload      TEXT    NOT NULL,
	sent_at      INTEGER NOT NULL,
	consumed_seq INTEGER
);
-- Serves the waits (a workflow's signals of a name, oldest first) and the pruning of
-- ended workflows (all their signals).
CREATE INDEX twice_workflow_signals_workflow ON twice_workflow_signals (service, workflow_id, name, id);
