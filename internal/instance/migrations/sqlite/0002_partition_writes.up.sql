-- The writes each partition's owners made (partition-writes), fenced by the partition's
-- token, in commit order.
CREATE TABLE IF NOT EXISTS twice_partition_writes (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, part INTEGER NOT NULL, token INTEGER NOT NULL, instance TEXT NOT NULL);
