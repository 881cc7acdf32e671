-- The stock the saga reserves, per service and product.
CREATE TABLE ordersaga_stock (
	service TEXT   NOT NULL,
	sku     TEXT   NOT NULL,
	units   BIGINT NOT NULL CHECK (units >= 0),
	PRIMARY KEY (service, sku)
);
-- Every reservation and release, written in the transaction that moves the stock; seq is
-- the program's count of the saga's effects (see journal), so that they read in order.
CREATE TABLE ordersaga_moves (
	service  TEXT   NOT NULL,
	order_id TEXT   NOT NULL,
	seq      BIGINT NOT NULL,
	what     TEXT   NOT NULL,
	PRIMARY KEY (service, order_id, seq)
);
