-- The writes each partition's owners made (partition-writes), fenced by the partition's
-- token, in commit order.
CREATE TABLE IF NOT EXISTS twice_partition_writes (id bigserial PRIMARY KEY, service text NOT NULL, part int NOT NULL, token bigint NOT NULL, instance text NOT NULL);
