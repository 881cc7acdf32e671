-- The step flows (workflows, check-workflows): every flow started, recorded in the
-- transaction that starts it; every completed run of a step, written in the step's own
-- transaction (at: the child's clock, Unix nanoseconds); and every compensation, once per
-- step however many times it ran, in the order they first ran.
CREATE TABLE IF NOT EXISTS twice_flow_steps (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, workflow_id TEXT NOT NULL, step INTEGER NOT NULL, instance TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS twice_flow_steps_workflow ON twice_flow_steps (service, workflow_id);
CREATE TABLE IF NOT EXISTS twice_flow_compensations (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, workflow_id TEXT NOT NULL, step INTEGER NOT NULL, instance TEXT NOT NULL, UNIQUE (service, workflow_id, step));
CREATE TABLE IF NOT EXISTS twice_flow_starts (service TEXT NOT NULL, workflow_id TEXT NOT NULL, PRIMARY KEY (service, workflow_id));
