-- Orders belong to a service; their lines belong to an order, with no foreign key to
-- delete them along with it.
CREATE TABLE twice_test_orders (id text PRIMARY KEY, service text NOT NULL);
CREATE TABLE twice_test_lines (order_id text NOT NULL, sku text NOT NULL);
-- Rows of every service at once.
CREATE TABLE twice_test_rates (currency text PRIMARY KEY);
