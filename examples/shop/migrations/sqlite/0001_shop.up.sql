CREATE TABLE shop_products (
	id          INTEGER PRIMARY KEY,
	name        TEXT    NOT NULL,
	price_cents INTEGER NOT NULL,
	version     INTEGER NOT NULL DEFAULT 1
);
INSERT INTO shop_products (id, name, price_cents) VALUES
	(1, 'Espresso beans, 1 kg', 2400),
	(2, 'Pour-over kettle', 5900),
	(3, 'Ceramic mug', 1200),
	(4, 'Hand grinder', 8900);

CREATE TABLE shop_orders (
	id           INTEGER PRIMARY KEY,
	user_id      TEXT    NOT NULL,
	product_id   INTEGER NOT NULL REFERENCES shop_products (id),
	quantity     INTEGER NOT NULL,
	price_cents  INTEGER NOT NULL,
	note         TEXT    NOT NULL DEFAULT '',
	version      INTEGER NOT NULL DEFAULT 1,
	placed_by    TEXT    NOT NULL,
	created_at   INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER)),
	confirmed_at INTEGER,
	confirmed_by TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX shop_orders_user ON shop_orders (user_id, id);

CREATE TABLE shop_reports (
	tick         INTEGER PRIMARY KEY,
	orders       INTEGER NOT NULL,
	revenue      INTEGER NOT NULL,
	made_by      TEXT    NOT NULL,
	made_at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER))
);

CREATE TABLE shop_chat (
	id         INTEGER PRIMARY KEY,
	room       TEXT    NOT NULL,
	user_id    TEXT    NOT NULL,
	body       TEXT    NOT NULL,
	posted_by  TEXT    NOT NULL,
	created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER))
);
CREATE INDEX shop_chat_room ON shop_chat (room, id);
