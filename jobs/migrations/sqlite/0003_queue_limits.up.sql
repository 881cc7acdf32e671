-- A queue's cap on its running jobs across the cluster, 0 for none. Every instance's fetch
-- reads it, so an instance configured without the cap keeps it too.
ALTER TABLE twice_queues ADD COLUMN global_limit INTEGER NOT NULL DEFAULT 0;
