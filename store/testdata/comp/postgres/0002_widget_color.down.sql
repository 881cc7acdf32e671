DROP INDEX twice_test_widgets_color;
ALTER TABLE twice_test_widgets DROP COLUMN color;
