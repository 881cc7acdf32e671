-- The current value of every setting of a service. A deleted setting keeps its row (deleted
-- = 1) so its version keeps counting up and every instance's poll sees the deletion.
-- Timestamps are microseconds since the epoch.
CREATE TABLE twice_settings (
	service    TEXT    NOT NULL,
	key        TEXT    NOT NULL,
	type       TEXT    NOT NULL,
	value      TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	rev        INTEGER NOT NULL,
	deleted    INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL,
	instance   TEXT    NOT NULL,
	actor      TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (service, key)
);
CREATE INDEX twice_settings_rev ON twice_settings (service, rev);

-- Every version of every setting: who changed what, when.
CREATE TABLE twice_settings_history (
	service  TEXT    NOT NULL,
	key      TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	rev      INTEGER NOT NULL,
	type     TEXT    NOT NULL,
	value    TEXT    NOT NULL,
	deleted  INTEGER NOT NULL,
	at       INTEGER NOT NULL,
	instance TEXT    NOT NULL,
	actor    TEXT    NOT NULL,
	PRIMARY KEY (service, key, version)
);
CREATE INDEX twice_settings_history_rev ON twice_settings_history (service, rev);

-- A service's revision counter. SQLite has one writer, so revisions commit in order.
CREATE TABLE twice_settings_revs (
	service TEXT    PRIMARY KEY,
	rev     INTEGER NOT NULL
);
