-- Deliveries made by restocks, each under the restock lock's fencing token.
CREATE TABLE shop_restocks (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	product_id BIGINT      NOT NULL REFERENCES shop_products (id),
	units      BIGINT      NOT NULL,
	token      BIGINT      NOT NULL,
	made_by    TEXT        NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
