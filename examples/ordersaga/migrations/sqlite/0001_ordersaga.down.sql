DROP TABLE ordersaga_moves;
DROP TABLE ordersaga_stock;
