DROP TABLE IF EXISTS twice_partition_writes;
