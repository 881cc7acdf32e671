CREATE TABLE orders (
	id         INTEGER PRIMARY KEY,
	user_id    TEXT    NOT NULL,
	total      INTEGER NOT NULL,
	paid       INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER))
);
CREATE INDEX orders_user ON orders (user_id, created_at);
