-- The partition sets of a service and their number of partitions, fixed when the set is
-- first joined: instances that split keys differently would give one key two owners.
-- Timestamps are microseconds since the epoch.
CREATE TABLE twice_partition_sets (
	service    TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	partitions INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (service, name)
);
