ALTER TABLE twice_test_widgets ADD COLUMN color text NOT NULL DEFAULT 'blue';
CREATE INDEX twice_test_widgets_color ON twice_test_widgets (color);
