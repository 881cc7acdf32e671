-- One row per running instance of a service. An instance is alive while its heartbeat is
-- younger than its own dead_after_ms, judged in database time.
CREATE TABLE twice_members (
	service       text        NOT NULL,
	id            text        NOT NULL,
	host          text        NOT NULL,
	pid           integer     NOT NULL,
	version       text        NOT NULL,
	addr          text        NOT NULL DEFAULT '',
	state         text        NOT NULL,
	dead_after_ms bigint      NOT NULL,
	started_at    timestamptz NOT NULL,
	heartbeat_at  timestamptz NOT NULL,
	PRIMARY KEY (service, id)
);
