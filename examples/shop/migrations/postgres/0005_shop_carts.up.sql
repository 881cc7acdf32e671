-- The shopping carts. A cart lives in the memory of the instance owning its user's partition
-- of the set "carts" (part); that instance writes each change through to here, fenced by
-- its assignment, and a new owner of the partition loads the partition's carts from here.
CREATE TABLE shop_carts (
	user_id    TEXT    NOT NULL,
	product_id BIGINT  NOT NULL REFERENCES shop_products (id),
	quantity   BIGINT  NOT NULL,
	part       INTEGER NOT NULL,
	PRIMARY KEY (user_id, product_id)
);
CREATE INDEX shop_carts_part ON shop_carts (part);
