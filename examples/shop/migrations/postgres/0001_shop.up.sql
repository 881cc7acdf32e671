CREATE TABLE shop_products (
	id          BIGINT PRIMARY KEY,
	name        TEXT   NOT NULL,
	price_cents BIGINT NOT NULL,
	version     BIGINT NOT NULL DEFAULT 1
);
INSERT INTO shop_products (id, name, price_cents) VALUES
	(1, 'Espresso beans, 1 kg', 2400),
	(2, 'Pour-over kettle', 5900),
	(3, 'Ceramic mug', 1200),
	(4, 'Hand grinder', 8900);

CREATE TABLE shop_orders (
	id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_id      TEXT        NOT NULL,
	product_id   BIGINT      NOT NULL REFERENCES shop_products (id),
	quantity     BIGINT      NOT NULL,
	price_cents  BIGINT      NOT NULL,
	note         TEXT        NOT NULL DEFAULT '',
	version      BIGINT      NOT NULL DEFAULT 1,
	placed_by    TEXT        NOT NULL,
	created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
	confirmed_at TIMESTAMPTZ,
	confirmed_by TEXT        NOT NULL DEFAULT ''
);
CREATE INDEX shop_orders_user ON shop_orders (user_id, id);

CREATE TABLE shop_reports (
	tick         TIMESTAMPTZ PRIMARY KEY,
	orders       BIGINT      NOT NULL,
	revenue      BIGINT      NOT NULL,
	made_by      TEXT        NOT NULL,
	made_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE shop_chat (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	room       TEXT        NOT NULL,
	user_id    TEXT        NOT NULL,
	body       TEXT        NOT NULL,
	posted_by  TEXT        NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX shop_chat_room ON shop_chat (room, id);
