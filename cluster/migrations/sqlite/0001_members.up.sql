-- One row per running instance of a service. An instance is alive while its heartbeat is
-- younger than its own dead_after_ms, judged in database time (microseconds since the epoch).
CREATE TABLE twice_members (
	service       TEXT    NOT NULL,
	id            TEXT    NOT NULL,
	host          TEXT    NOT NULL,
	pid           INTEGER NOT NULL,
	version       TEXT    NOT NULL,
	addr          TEXT    NOT NULL DEFAULT '',
	state         TEXT    NOT NULL,
	dead_after_ms INTEGER NOT NULL,
	started_at    INTEGER NOT NULL,
	heartbeat_at  INTEGER NOT NULL,
	PRIMARY KEY (service, id)
) WITHOUT ROWID;
