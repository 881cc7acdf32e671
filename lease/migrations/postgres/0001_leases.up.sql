-- A lease is a row per (service, name). The row is never deleted: its token must keep
-- increasing across every acquisition, release and expiry, or fencing means nothing.
CREATE TABLE twice_leases (
	service     text        NOT NULL,
	name        text        NOT NULL,
	holder      text,
	token       bigint      NOT NULL,
	ttl_ms      bigint      NOT NULL,
	acquired_at timestamptz NOT NULL,
	expires_at  timestamptz NOT NULL,
	PRIMARY KEY (service, name)
);
CREATE INDEX twice_leases_holder ON twice_leases (service, holder) WHERE holder IS NOT NULL;
