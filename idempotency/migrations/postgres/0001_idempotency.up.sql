-- One row per claimed Idempotency-Key, scoped by service and client. state: 0 the request
-- is running on owner; 1 done, response stored; 2 done, response too large to store.
CREATE TABLE twice_idempotency (
	service     text        NOT NULL,
	scope       text        NOT NULL,
	key         text        NOT NULL,
	fingerprint bytea       NOT NULL,
	owner       text        NOT NULL,
	state       smallint    NOT NULL,
	status      integer     NOT NULL DEFAULT 0,
	header      bytea,
	body        bytea,
	created_at  timestamptz NOT NULL,
	expires_at  timestamptz NOT NULL,
	PRIMARY KEY (service, scope, key)
);
CREATE INDEX twice_idempotency_expiry ON twice_idempotency (service, expires_at);
