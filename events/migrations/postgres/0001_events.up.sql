-- The event log. id is unique but is NOT commit order: two transactions take ids in one
-- order and may commit in the other. Readers order by (xid, id) instead, and read only rows
-- whose transaction id is below the oldest transaction still running
-- (pg_snapshot_xmin(pg_current_snapshot())): every such transaction has ended, so no row can
-- appear later before a reader's position, and a late commit is never skipped.
CREATE TABLE twice_events (
	id      bigserial   PRIMARY KEY,
	service text        NOT NULL,
	topic   text        NOT NULL,
	key     text        NOT NULL DEFAULT '',
	hash    integer     NOT NULL,
	payload bytea       NOT NULL,
	headers bytea,
	stream  text,
	version bigint,
	xid     bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
	at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX twice_events_read ON twice_events (service, topic, xid, id);
CREATE INDEX twice_events_at ON twice_events (service, at);
CREATE UNIQUE INDEX twice_events_stream ON twice_events (service, stream, version) WHERE stream IS NOT NULL;

-- A consumer group: its topics and partition count are fixed when it is first created.
CREATE TABLE twice_event_groups (
	service    text        NOT NULL,
	grp        text        NOT NULL,
	topics     text        NOT NULL,
	partitions integer     NOT NULL,
	mode       text        NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (service, grp)
);

-- Where each partition of a group has read to. ver changes on every write, so a stale
-- owner's checkpoint (compare-and-set on ver) is refused.
CREATE TABLE twice_event_offsets (
	service    text        NOT NULL,
	grp        text        NOT NULL,
	part       integer     NOT NULL,
	xid        bigint      NOT NULL,
	id         bigint      NOT NULL,
	ver        bigint      NOT NULL DEFAULT 0,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (service, grp, part)
);

-- Events a group gave up on after its retries.
CREATE TABLE twice_event_dead (
	service  text        NOT NULL,
	grp      text        NOT NULL,
	event_id bigint      NOT NULL,
	attempts integer     NOT NULL,
	error    text        NOT NULL,
	at       timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (service, grp, event_id)
);
