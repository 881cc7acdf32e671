CREATE TABLE deploy_counters (
	service TEXT   NOT NULL,
	name    TEXT   NOT NULL,
	n       BIGINT NOT NULL,
	PRIMARY KEY (service, name)
);
