DROP TABLE shop_restocks;
