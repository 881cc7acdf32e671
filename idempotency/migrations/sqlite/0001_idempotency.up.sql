-- One row per claimed Idempotency-Key, scoped by service and client. state: 0 the request
-- is running on owner; 1 done, response stored; 2 done, response too large to store.
-- Times are microseconds since the epoch.
CREATE TABLE twice_idempotency (
	service     TEXT    NOT NULL,
	scope       TEXT    NOT NULL,
	key         TEXT    NOT NULL,
	fingerprint BLOB    NOT NULL,
	owner       TEXT    NOT NULL,
	state       INTEGER NOT NULL,
	status      INTEGER NOT NULL DEFAULT 0,
	header      BLOB,
	body        BLOB,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	PRIMARY KEY (service, scope, key)
) WITHOUT ROWID;
CREATE INDEX twice_idempotency_expiry ON twice_idempotency (service, expires_at);
