-- Stock, which an order's fulfilment workflow reserves and a restock tops up.
ALTER TABLE shop_products ADD COLUMN stock BIGINT NOT NULL DEFAULT 20;

-- Units sold per product, kept by the exactly-once consumer of order.placed events.
CREATE TABLE shop_sales (
	product_id BIGINT PRIMARY KEY REFERENCES shop_products (id),
	sold       BIGINT NOT NULL
);

-- The payments the fulfilment workflow makes, by the charge step's idempotency key: the
-- stand-in for a payment provider that charges once per key.
CREATE TABLE shop_payments (
	key        TEXT PRIMARY KEY,
	order_id   BIGINT      NOT NULL,
	cents      BIGINT      NOT NULL,
	state      TEXT        NOT NULL DEFAULT 'charged',
	made_by    TEXT        NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

