DROP TABLE shop_payments;
DROP TABLE shop_sales;
ALTER TABLE shop_products DROP COLUMN stock;
