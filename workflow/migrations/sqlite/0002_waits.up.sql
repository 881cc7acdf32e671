-- Waits: a row of twice_workflow_steps is a step ('step'), a durable sleep ('sleep') or a
-- wait for a signal ('signal'). A wait is stored 'waiting' with its wake-up time
-- (microseconds since the epoch) when the workflow first reaches it, so that a resumed run
-- sleeps on from where it was.
ALTER TABLE twice_workflow_steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'step';
ALTER TABLE twice_workflow_steps ADD COLUMN wake_at INTEGER;
-- The job that carries a waiting workflow on (see package jobs): what a signal or a
-- cancellation wakes. NULL until the workflow first waits.
ALTER TABLE twice_workflows ADD COLUMN job_id INTEGER;
