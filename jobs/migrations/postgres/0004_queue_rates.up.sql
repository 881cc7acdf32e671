-- A queue's rate limit across the cluster: at most rate_limit starts in any window of
-- rate_period_ms, counted apart per value of the args field rate_field when it is not ''.
-- 0 for none. Every instance's fetch reads it, as it reads global_limit.
ALTER TABLE twice_queues ADD COLUMN rate_limit integer NOT NULL DEFAULT 0;
ALTER TABLE twice_queues ADD COLUMN rate_period_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE twice_queues ADD COLUMN rate_field text NOT NULL DEFAULT '';

-- The starts of rate-limited queues within their window, which the limit counts. Fetches
-- write and prune them under the queue's turn; rate_key is '' for a limit of the whole
-- queue.
CREATE TABLE twice_queue_starts (
	service    text        NOT NULL,
	queue      text        NOT NULL,
	rate_key   text        NOT NULL,
	started_at timestamptz NOT NULL
);
CREATE INDEX twice_queue_starts_window ON twice_queue_starts (service, queue, started_at);
