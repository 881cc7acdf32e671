-- The tables the instances' workloads write and the checker, the demo and the crash tests
-- read. IF NOT EXISTS: databases from before this migration may have them already.

-- Fenced writes of the leaders (fenced-writes), in commit order.
CREATE TABLE IF NOT EXISTS twice_fence_writes (id bigserial PRIMARY KEY, service text NOT NULL, token bigint NOT NULL, instance text NOT NULL);

-- The checker's register, written only by the leader (check-register), and the log of every
-- fenced write, the leader's and the lock holders' (check-locks).
CREATE TABLE IF NOT EXISTS twice_check_register (service text PRIMARY KEY, value bigint NOT NULL, token bigint NOT NULL);
CREATE TABLE IF NOT EXISTS twice_check_log (id bigserial PRIMARY KEY, service text NOT NULL, kind text NOT NULL, token bigint NOT NULL, value bigint NOT NULL, instance text NOT NULL);
-- Every event the checker's groups handled (check-events).
CREATE TABLE IF NOT EXISTS twice_check_effects (service text NOT NULL, grp text NOT NULL, event_id bigint NOT NULL, instance text NOT NULL);
-- The row the checker's setting and cache converge to (check-converge).
CREATE TABLE IF NOT EXISTS twice_check_cached (service text PRIMARY KEY, value bigint NOT NULL, writes bigint NOT NULL);
-- The effects of POST /pay (check-http).
CREATE TABLE IF NOT EXISTS twice_check_payments (service text NOT NULL, idem_key text NOT NULL, instance text NOT NULL);
-- Every start of the checker's jobs and schedule ticks (check-jobs).
CREATE TABLE IF NOT EXISTS twice_check_job_runs (service text NOT NULL, job_id bigint NOT NULL, attempt int NOT NULL, instance text NOT NULL, claimed bigint NOT NULL, started bigint NOT NULL);
CREATE TABLE IF NOT EXISTS twice_check_tick_runs (service text NOT NULL, tick text NOT NULL, job_id bigint NOT NULL, attempt int NOT NULL, instance text NOT NULL, claimed bigint NOT NULL, started bigint NOT NULL);

-- Every event the crash tests' consumers handled (consume); the tests use a database each.
CREATE TABLE IF NOT EXISTS twice_event_effects (event_id bigint NOT NULL, instance text NOT NULL);
-- The row the cache writer bumps and invalidates (cache-writer), at version 0.
CREATE TABLE IF NOT EXISTS twice_cache_crash (id integer PRIMARY KEY, v integer NOT NULL);
INSERT INTO twice_cache_crash (id, v) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
