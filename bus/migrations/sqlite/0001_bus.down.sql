DROP TABLE twice_bus;
