DROP TABLE twice_queue_starts;
ALTER TABLE twice_queues DROP COLUMN rate_field;
ALTER TABLE twice_queues DROP COLUMN rate_period_ms;
ALTER TABLE twice_queues DROP COLUMN rate_limit;
