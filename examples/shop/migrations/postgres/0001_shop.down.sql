DROP TABLE shop_chat;
DROP TABLE shop_reports;
DROP TABLE shop_orders;
DROP TABLE shop_products;
