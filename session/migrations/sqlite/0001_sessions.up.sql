-- A session is a row found by the SHA-256 of its cookie token; the token itself is never
-- stored, so reading the table gives nobody a session. id is internal and never leaves the
-- server, so renewing the token keeps the values attached. Times are microseconds since
-- the epoch.
CREATE TABLE twice_sessions (
	id         TEXT    PRIMARY KEY,
	service    TEXT    NOT NULL,
	token_hash BLOB    NOT NULL UNIQUE,
	user_id    TEXT,
	user_agent TEXT    NOT NULL DEFAULT '',
	idle_ms    INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	seen_at    INTEGER NOT NULL,
	expires_at INTEGER NOT NULL, -- the absolute limit
	deadline   INTEGER NOT NULL  -- min(expires_at, seen_at + idle): the session ends here
) WITHOUT ROWID;
CREATE INDEX twice_sessions_user ON twice_sessions (service, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX twice_sessions_deadline ON twice_sessions (service, deadline);

-- One row per key, so two requests that change different keys never overwrite each other,
-- and concurrent changes to one key resolve by the later commit.
CREATE TABLE twice_session_values (
	session_id TEXT    NOT NULL REFERENCES twice_sessions (id) ON DELETE CASCADE,
	key        TEXT    NOT NULL,
	value      BLOB    NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (session_id, key)
) WITHOUT ROWID;

-- Blobs of the scs adapter, by the SHA-256 of scs's token.
CREATE TABLE twice_scs_sessions (
	service    TEXT    NOT NULL,
	token_hash BLOB    NOT NULL,
	data       BLOB    NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (service, token_hash)
) WITHOUT ROWID;
CREATE INDEX twice_scs_sessions_expiry ON twice_scs_sessions (service, expires_at);
