-- Who is connected where: a row per connection (room '') and one per room each connection
-- is in, owned by the instance holding the connection. The incarnation tells a restarted
-- instance's rows from its previous process's, which it deletes when its presence starts.
-- Rows whose instance is not alive are never read (cluster.Alive) and are deleted when a
-- death is noticed and by the leader. Timestamps are microseconds since the epoch.
CREATE TABLE twice_presence (
	service     TEXT    NOT NULL,
	conn        TEXT    NOT NULL,
	room        TEXT    NOT NULL,
	user_id     TEXT    NOT NULL,
	instance    TEXT    NOT NULL,
	incarnation TEXT    NOT NULL,
	at          INTEGER NOT NULL,
	PRIMARY KEY (service, conn, room)
);
CREATE INDEX twice_presence_instance ON twice_presence (service, instance);

-- A service's presence revision: every change of its rows moves it. SQLite has one writer,
-- so an instance whose view was read at revision n knows it must read again when the
-- revision is no longer n.
CREATE TABLE twice_presence_revs (
	service TEXT    PRIMARY KEY,
	rev     INTEGER NOT NULL
);
