DROP INDEX twice_event_dead_replay;
ALTER TABLE twice_event_dead DROP COLUMN replay_part;
