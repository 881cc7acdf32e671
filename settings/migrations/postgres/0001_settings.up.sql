-- The current value of every setting of a service. A deleted setting keeps its row (deleted
-- = true) so its version keeps counting up and every instance's poll sees the deletion.
CREATE TABLE twice_settings (
	service    text        NOT NULL,
	key        text        NOT NULL,
	type       text        NOT NULL,
	value      text        NOT NULL,
	version    bigint      NOT NULL,
	rev        bigint      NOT NULL,
	deleted    boolean     NOT NULL DEFAULT false,
	updated_at timestamptz NOT NULL,
	instance   text        NOT NULL,
	actor      text        NOT NULL DEFAULT '',
	PRIMARY KEY (service, key)
);
CREATE INDEX twice_settings_rev ON twice_settings (service, rev);

-- Every version of every setting: who changed what, when.
CREATE TABLE twice_settings_history (
	service  text        NOT NULL,
	key      text        NOT NULL,
	version  bigint      NOT NULL,
	rev      bigint      NOT NULL,
	type     text        NOT NULL,
	value    text        NOT NULL,
	deleted  boolean     NOT NULL,
	at       timestamptz NOT NULL,
	instance text        NOT NULL,
	actor    text        NOT NULL,
	PRIMARY KEY (service, key, version)
);
CREATE INDEX twice_settings_history_rev ON twice_settings_history (service, rev);

-- A service's revision counter. Each change takes the next revision under this row's lock,
-- held until it commits, so revisions commit in order and a reader asking for "everything
-- after revision n" never skips a change that commits late.
CREATE TABLE twice_settings_revs (
	service text   PRIMARY KEY,
	rev     bigint NOT NULL
);
