-- One row per schedule a service declares. last_tick is the last tick fired (microseconds
-- since the epoch), so a restart never skips one; the tick's job carries the unique key
-- (schedule, tick), so two leaders at once still fire it once.
CREATE TABLE twice_cron (
	service     TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	expr        TEXT    NOT NULL,
	tz          TEXT    NOT NULL,
	kind        TEXT    NOT NULL,
	args        TEXT    NOT NULL,
	opts        TEXT    NOT NULL,
	declared    INTEGER NOT NULL DEFAULT 1,
	last_tick   INTEGER,
	last_job_id INTEGER,
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (service, name)
) WITHOUT ROWID;
