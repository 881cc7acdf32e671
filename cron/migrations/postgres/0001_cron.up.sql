-- One row per schedule a service declares. last_tick is the last tick fired, so a restart
-- never skips one; the tick's job carries the unique key (schedule, tick), so two leaders
-- at once still fire it once.
CREATE TABLE twice_cron (
	service     text        NOT NULL,
	name        text        NOT NULL,
	expr        text        NOT NULL,
	tz          text        NOT NULL,
	kind        text        NOT NULL,
	args        jsonb       NOT NULL,
	opts        jsonb       NOT NULL,
	declared    boolean     NOT NULL DEFAULT true,
	last_tick   timestamptz,
	last_job_id bigint,
	updated_at  timestamptz NOT NULL,
	PRIMARY KEY (service, name)
);
