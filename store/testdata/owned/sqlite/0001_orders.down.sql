DROP TABLE twice_test_rates;
DROP TABLE twice_test_lines;
DROP TABLE twice_test_orders;
