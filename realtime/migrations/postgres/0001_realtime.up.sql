-- A room's stream (a room "r:NAME", or a user's own stream "u:USER"): its epoch, a
-- random id chosen when the row is made, so a stream reset or lost (the row deleted) gets
-- a new one; and top, the offset of its last message. Publishing takes the row's lock
-- until the commit, so offsets commit in order, with no hole.
CREATE TABLE twice_realtime_rooms (
	service text        NOT NULL,
	room    text        NOT NULL,
	epoch   text        NOT NULL,
	top     bigint      NOT NULL,
	at      timestamptz NOT NULL,
	PRIMARY KEY (service, room)
);
CREATE INDEX twice_realtime_rooms_at ON twice_realtime_rooms (service, at);

-- The history: each message of a stream at its offset, kept for the count and age the
-- hub is configured with (the leader prunes the rest).
CREATE TABLE twice_realtime_messages (
	service text        NOT NULL,
	room    text        NOT NULL,
	off     bigint      NOT NULL,
	data    text        NOT NULL,
	at      timestamptz NOT NULL,
	PRIMARY KEY (service, room, off)
);
CREATE INDEX twice_realtime_messages_at ON twice_realtime_messages (service, at);
