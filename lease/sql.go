package lease

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the lease table's schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("lease", migrations, store.Table{Name: "twice_leases", Service: "service"})
}

// servicesSQL lists the services with a lease its holder has not released (see [Services]).
const servicesSQL = `SELECT DISTINCT service FROM twice_leases WHERE holder IS NOT NULL ORDER BY 1`

// queries are the lease statements. In each that reads the time, $1 is "now": NULL for
// database time, or a test clock's time.
type queries struct {
	acquire, insert, renew, release, releaseAll, releaseDead, check, info, list string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	// The dialects differ in locking. On PostgreSQL the explicit FOR UPDATE conflicts with
	// the FOR KEY SHARE a fenced write takes, so a new token cannot be issued while a
	// write checked against the old one is uncommitted; renewals do not change the token
	// and take only the weaker lock, so they never wait for a fenced write. SQLite has one
	// writer at a time, so a plain update does: a fenced write's transaction holds the
	// write lock, and no acquisition can run until it ends.
	acquire: `{pg
WITH free AS (
	SELECT service, name FROM twice_leases
	WHERE service = $2 AND name = $3
	  AND (holder IS NULL OR expires_at <= {now})
	FOR UPDATE
)
UPDATE twice_leases l
SET holder = $4, token = l.token + 1, ttl_ms = $5,
    acquired_at = {now},
    expires_at = {now} + {ms $5::bigint}
FROM free
WHERE l.service = free.service AND l.name = free.name
RETURNING l.token}{sqlite
UPDATE twice_leases
SET holder = $4, token = token + 1, ttl_ms = $5,
    acquired_at = {now},
    expires_at = {now} + {ms $5}
WHERE service = $2 AND name = $3
  AND (holder IS NULL OR expires_at <= {now})
RETURNING token}`,
	insert: `
INSERT INTO twice_leases (service, name, holder, token, ttl_ms, acquired_at, expires_at)
VALUES ($2, $3, $4, 1, $5, {now},
        {now} + {ms $5::bigint})
ON CONFLICT (service, name) DO NOTHING
RETURNING token`,
	// renew extends only leases that have not run out: one that has is free for anyone to
	// take, and its holder has already stopped believing in it (its own deadline passed
	// first). Extending it would bring it back for the others to see, until the holder
	// freed the row it no longer stands for: a member of a partition set, frozen past its
	// TTL and then woken, came back, went again and came back, and the others moved
	// partitions each time.
	renew: `
UPDATE twice_leases
SET expires_at = {now} + {ms ttl_ms}
WHERE service = $2 AND holder = $3 AND expires_at > {now}
RETURNING name, token`,
	release: `
UPDATE twice_leases SET holder = NULL, expires_at = {now}
WHERE service = $2 AND name = $3 AND holder = $4 AND token = $5`,
	releaseAll: `
UPDATE twice_leases SET holder = NULL, expires_at = {now}
WHERE service = $2 AND holder = $3`,
	releaseDead: `
UPDATE twice_leases SET holder = NULL, expires_at = {now}
WHERE service = $2 AND holder = $3 AND expires_at > {now}
RETURNING name`,
	// On PostgreSQL the row lock makes a takeover wait for this transaction. So that a
	// holder frozen mid-transaction cannot make it wait forever, the server aborts the
	// transaction if it sits idle longer than the lease's TTL ($3, in ms); the stale write
	// is then lost, not accepted. SQLite's writer lock already excludes a takeover and has
	// no such setting, so it only returns $3.
	check: `
SELECT holder, token, {pg set_config('idle_in_transaction_session_timeout', $3::text, true)}{sqlite $3}
FROM twice_leases WHERE service = $1 AND name = $2{pg  FOR KEY SHARE}`,
	info: `
SELECT name, coalesce(holder, ''), token, acquired_at, expires_at,
       {age expires_at, {now}}
FROM twice_leases WHERE service = $2 AND name = $3`,
	list: `
SELECT name, coalesce(holder, ''), token, acquired_at, expires_at,
       {age expires_at, {now}}
FROM twice_leases
WHERE service = $2 AND substr(name, 1, length($3)) = $3
  AND holder IS NOT NULL AND expires_at > {now}
ORDER BY name`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
