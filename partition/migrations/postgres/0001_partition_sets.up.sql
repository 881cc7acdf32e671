-- The partition sets of a service and their number of partitions, fixed when the set is
-- first joined: instances that split keys differently would give one key two owners.
CREATE TABLE twice_partition_sets (
	service    text        NOT NULL,
	name       text        NOT NULL,
	partitions integer     NOT NULL,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (service, name)
);
