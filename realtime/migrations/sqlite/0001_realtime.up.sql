-- A room's stream (a room "r:NAME", or a user's own stream "u:USER"): its epoch, a
-- random id chosen when the row is made, so a stream reset or lost (the row deleted) gets
-- a new one; and top, the offset of its last message. SQLite has one writer, so offsets
-- commit in order, with no hole. Timestamps are microseconds since the epoch.
CREATE TABLE twice_realtime_rooms (
	service TEXT    NOT NULL,
	room    TEXT    NOT NULL,
	epoch   TEXT    NOT NULL,
	top     INTEGER NOT NULL,
	at      INTEGER NOT NULL,
	PRIMARY KEY (service, room)
);
CREATE INDEX twice_realtime_rooms_at ON twice_realtime_rooms (service, at);

-- The history: each message of a stream at its offset, kept for the count and age the
-- hub is configured with (the leader prunes the rest).
CREATE TABLE twice_realtime_messages (
	service TEXT    NOT NULL,
	room    TEXT    NOT NULL,
	off     INTEGER NOT NULL,
	data    TEXT    NOT NULL,
	at      INTEGER NOT NULL,
	PRIMARY KEY (service, room, off)
);
CREATE INDEX twice_realtime_messages_at ON twice_realtime_messages (service, at);
