CREATE TABLE twice_test_widgets (id bigserial PRIMARY KEY, name text NOT NULL, at timestamptz NOT NULL DEFAULT now());
