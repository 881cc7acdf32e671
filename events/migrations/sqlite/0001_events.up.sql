-- The event log. SQLite has one writer at a time and a transaction takes its ids while it
-- holds the write lock, so id order is commit order and readers need nothing more.
CREATE TABLE twice_events (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	service TEXT    NOT NULL,
	topic   TEXT    NOT NULL,
	key     TEXT    NOT NULL DEFAULT '',
	hash    INTEGER NOT NULL,
	payload BLOB    NOT NULL,
	headers BLOB,
	stream  TEXT,
	version INTEGER,
	at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER))
);
CREATE INDEX twice_events_read ON twice_events (service, topic, id);
CREATE INDEX twice_events_at ON twice_events (service, at);
CREATE UNIQUE INDEX twice_events_stream ON twice_events (service, stream, version) WHERE stream IS NOT NULL;

CREATE TABLE twice_event_groups (
	service    TEXT    NOT NULL,
	grp        TEXT    NOT NULL,
	topics     TEXT    NOT NULL,
	partitions INTEGER NOT NULL,
	mode       TEXT    NOT NULL,
	created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER)),
	PRIMARY KEY (service, grp)
);

CREATE TABLE twice_event_offsets (
	service    TEXT    NOT NULL,
	grp        TEXT    NOT NULL,
	part       INTEGER NOT NULL,
	xid        INTEGER NOT NULL,
	id         INTEGER NOT NULL,
	ver        INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER)),
	PRIMARY KEY (service, grp, part)
);

CREATE TABLE twice_event_dead (
	service  TEXT    NOT NULL,
	grp      TEXT    NOT NULL,
	event_id INTEGER NOT NULL,
	attempts INTEGER NOT NULL,
	error    TEXT    NOT NULL,
	at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER)),
	PRIMARY KEY (service, grp, event_id)
);
