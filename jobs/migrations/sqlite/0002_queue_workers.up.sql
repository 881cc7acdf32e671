-- The queues each instance works, written when it starts fetching a queue and deleted when
-- it stops. Only rows of live instances count (the members table says which are alive), so
-- a killed instance's rows are harmless until the leader deletes them. Operators see from
-- it which queues have jobs that no instance works.
CREATE TABLE twice_queue_workers (
	service    TEXT    NOT NULL,
	queue      TEXT    NOT NULL,
	instance   TEXT    NOT NULL,
	started_at INTEGER NOT NULL,
	PRIMARY KEY (service, queue, instance)
) WITHOUT ROWID;
