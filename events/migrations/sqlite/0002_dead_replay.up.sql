-- A dead letter someone asked to replay alone (Log.ReplayDeadLetter): the partition of the
-- group its event belongs to, whose reader handles it again; NULL otherwise. The partial
-- index holds only the dead letters waiting for their replay, so a reader's look at it
-- (with its checkpoint) costs nothing while there are none.
ALTER TABLE twice_event_dead ADD COLUMN replay_part INTEGER;
CREATE INDEX twice_event_dead_replay ON twice_event_dead (service, grp, replay_part) WHERE replay_part IS NOT NULL;
