CREATE TABLE orders (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_id    TEXT        NOT NULL,
	total      BIGINT      NOT NULL,
	paid       BOOLEAN     NOT NULL DEFAULT false,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_user ON orders (user_id, created_at);
