-- A session is a row found by the SHA-256 of its cookie token; the token itself is never
-- stored, so reading the table gives nobody a session. id is internal and never leaves the
-- server, so renewing the token keeps the values attached.
CREATE TABLE twice_sessions (
	id         text        PRIMARY KEY,
	service    text        NOT NULL,
	token_hash bytea       NOT NULL UNIQUE,
	user_id    text,
	user_agent text        NOT NULL DEFAULT '',
	idle_ms    bigint      NOT NULL,
	created_at timestamptz NOT NULL,
	seen_at    timestamptz NOT NULL,
	expires_at timestamptz NOT NULL, -- the absolute limit
	deadline   timestamptz NOT NULL  -- least(expires_at, seen_at + idle): the session ends here
);
CREATE INDEX twice_sessions_user ON twice_sessions (service, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX twice_sessions_deadline ON twice_sessions (service, deadline);

-- One row per key, so two requests that change different keys never overwrite each other,
-- and concurrent changes to one key resolve by the later commit.
CREATE TABLE twice_session_values (
	session_id text        NOT NULL REFERENCES twice_sessions (id) ON DELETE CASCADE,
	key        text        NOT NULL,
	value      bytea       NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (session_id, key)
);

-- Blobs of the scs adapter, by the SHA-256 of scs's token.
CREATE TABLE twice_scs_sessions (
	service    text        NOT NULL,
	token_hash bytea       NOT NULL,
	data       bytea       NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (service, token_hash)
);
CREATE INDEX twice_scs_sessions_expiry ON twice_scs_sessions (service, expires_at);
