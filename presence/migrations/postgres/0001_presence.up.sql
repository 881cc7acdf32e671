-- Who is connected where: a row per connection (room '') and one per room each connection
-- is in, owned by the instance holding the connection. The incarnation tells a restarted
-- instance's rows from its previous process's, which it deletes when its presence starts.
-- Rows whose instance is not alive are never read (cluster.Alive) and are deleted when a
-- death is noticed and by the leader.
CREATE TABLE twice_presence (
	service     text        NOT NULL,
	conn        text        NOT NULL,
	room        text        NOT NULL,
	user_id     text        NOT NULL,
	instance    text        NOT NULL,
	incarnation text        NOT NULL,
	at          timestamptz NOT NULL,
	PRIMARY KEY (service, conn, room)
);
CREATE INDEX twice_presence_instance ON twice_presence (service, instance);

-- A service's presence revision: every change of its rows moves it, under this row's lock
-- held until the change commits, so an instance whose view was read at revision n knows it
-- must read again when the revision is no longer n.
CREATE TABLE twice_presence_revs (
	service text   PRIMARY KEY,
	rev     bigint NOT NULL
);
