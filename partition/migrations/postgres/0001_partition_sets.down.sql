DROP TABLE twice_partition_sets;
