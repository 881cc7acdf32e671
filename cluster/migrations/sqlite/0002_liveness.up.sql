-- The key of the instance's liveness lock: a file lock its process holds for as long as it
-- lives, in the directory beside the database file (see the cluster package). NULL when it
-- holds none.
ALTER TABLE twice_members ADD COLUMN live_key INTEGER;
