-- The key of the instance's liveness lock: a session advisory lock its process holds for as
-- long as it lives (see the cluster package). NULL when it holds none.
ALTER TABLE twice_members ADD COLUMN live_key bigint;
