-- A lease is a row per (service, name). The row is never deleted: its token must keep
-- increasing across every acquisition, release and expiry, or fencing means nothing.
-- Times are microseconds since the epoch.
CREATE TABLE twice_leases (
	service     TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	holder      TEXT,
	token       INTEGER NOT NULL,
	ttl_ms      INTEGER NOT NULL,
	acquired_at INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	PRIMARY KEY (service, name)
) WITHOUT ROWID;
CREATE INDEX twice_leases_holder ON twice_leases (service, holder) WHERE holder IS NOT NULL;
