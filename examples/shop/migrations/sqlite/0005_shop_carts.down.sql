DROP TABLE shop_carts;
