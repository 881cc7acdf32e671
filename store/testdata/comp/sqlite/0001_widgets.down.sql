DROP TABLE twice_test_widgets;
