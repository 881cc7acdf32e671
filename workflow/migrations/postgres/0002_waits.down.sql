ALTER TABLE twice_workflows DROP COLUMN job_id;
ALTER TABLE twice_workflow_steps DROP COLUMN wake_at;
ALTER TABLE twice_workflow_steps DROP COLUMN kind;
