-- The tables the instances' workloads write and the checker, the demo and the crash tests
-- read. IF NOT EXISTS: databases from before this migration may have them already.

-- Fenced writes of the leaders (fenced-writes), in commit order.
CREATE TABLE IF NOT EXISTS twice_fence_writes (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, token INTEGER NOT NULL, instance TEXT NOT NULL);

-- The checker's register, written only by the leader (check-register), and the log of every
-- fenced write, the leader's and the lock holders' (check-locks).
CREATE TABLE IF NOT EXISTS twice_check_register (service TEXT PRIMARY KEY, value INTEGER NOT NULL, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS twice_check_log (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, kind TEXT NOT NULL, token INTEGER NOT NULL, value INTEGER NOT NULL, instance TEXT NOT NULL);
-- Every event the checker's groups handled (check-events).
CREATE TABLE IF NOT EXISTS twice_check_effects (service TEXT NOT NULL, grp TEXT NOT NULL, event_id INTEGER NOT NULL, instance TEXT NOT NULL);
-- The row the checker's setting and cache converge to (check-converge).
CREATE TABLE IF NOT EXISTS twice_check_cached (service TEXT PRIMARY KEY, value INTEGER NOT NULL, writes INTEGER NOT NULL);
-- The effects of POST /pay (check-http).
CREATE TABLE IF NOT EXISTS twice_check_payments (service TEXT NOT NULL, idem_key TEXT NOT NULL, instance TEXT NOT NULL);
-- Every start of the checker's jobs and schedule ticks (check-jobs).
CREATE TABLE IF NOT EXISTS twice_check_job_runs (service TEXT NOT NULL, job_id INTEGER NOT NULL, attempt INTEGER NOT NULL, instance TEXT NOT NULL, claimed INTEGER NOT NULL, started INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS twice_check_tick_runs (service TEXT NOT NULL, tick TEXT NOT NULL, job_id INTEGER NOT NULL, attempt INTEGER NOT NULL, instance TEXT NOT NULL, claimed INTEGER NOT NULL, started INTEGER NOT NULL);

-- Every event the crash tests' consumers handled (consume); the tests use a database each.
CREATE TABLE IF NOT EXISTS twice_event_effects (event_id INTEGER NOT NULL, instance TEXT NOT NULL);
-- The row the cache writer bumps and invalidates (cache-writer), at version 0.
CREATE TABLE IF NOT EXISTS twice_cache_crash (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
INSERT INTO twice_cache_crash (id, v) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
