ALTER TABLE twice_queues DROP COLUMN global_limit;
