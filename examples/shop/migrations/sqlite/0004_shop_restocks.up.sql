-- Deliveries made by restocks, each under the restock lock's fencing token.
CREATE TABLE shop_restocks (
	id         INTEGER PRIMARY KEY,
	product_id INTEGER NOT NULL REFERENCES shop_products (id),
	units      INTEGER NOT NULL,
	token      INTEGER NOT NULL,
	made_by    TEXT    NOT NULL,
	created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER))
);
