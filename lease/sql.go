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

// queries are the lease statements of one dialect. In each, $1 is "now": NULL for database
// time, or a test clock's time.
type queries struct {
	acquire, insert, renew, release, releaseAll, check, info, list string
}

var pgQueries = queries{
	// The explicit FOR UPDATE conflicts with the FOR KEY SHARE a fenced write takes, so a
	// new token cannot be issued while a write checked against the old one is uncommitted.
	// Renewals do not change the token and take only the weaker lock, so they never wait
	// for a fenced write.
	acquire: `
WITH free AS (
	SELECT service, name FROM twice_leases
	WHERE service = $2 AND name = $3
	  AND (holder IS NULL OR expires_at <= coalesce($1::timestamptz, now()))
	FOR UPDATE
)
UPDATE twice_leases l
SET holder = $4, token = l.token + 1, ttl_ms = $5,
    acquired_at = coalesce($1::timestamptz, now()),
    expires_at = coalesce($1::timestamptz, now()) + $5::bigint * interval '1 millisecond'
FROM free
WHERE l.service = free.service AND l.name = free.name
RETURNING l.token`,
	insert: `
INSERT INTO twice_leases (service, name, holder, token, ttl_ms, acquired_at, expires_at)
VALUES ($2, $3, $4, 1, $5, coalesce($1::timestamptz, now()),
        coalesce($1::timestamptz, now()) + $5::bigint * interval '1 millisecond')
ON CONFLICT (service, name) DO NOTHING
RETURNING token`,
	renew: `
UPDATE twice_leases
SET expires_at = coalesce($1::timestamptz, now()) + ttl_ms * interval '1 millisecond'
WHERE service = $2 AND holder = $3
RETURNING name, token`,
	release: `
UPDATE twice_leases SET holder = NULL, expires_at = coalesce($1::timestamptz, now())
WHERE service = $2 AND name = $3 AND holder = $4 AND token = $5`,
	releaseAll: `
UPDATE twice_leases SET holder = NULL, expires_at = coalesce($1::timestamptz, now())
WHERE service = $2 AND holder = $3`,
	// The row lock makes a takeover wait for this transaction. So that a holder frozen
	// mid-transaction cannot make it wait forever, the server aborts the transaction if it
	// sits idle longer than the lease's TTL ($3, in ms); the stale write is then lost, not
	// accepted.
	check: `
SELECT holder, token, set_config('idle_in_transaction_session_timeout', $3::text, true)
FROM twice_leases WHERE service = $1 AND name = $2 FOR KEY SHARE`,
	info: `
SELECT name, coalesce(holder, ''), token, acquired_at, expires_at,
       (extract(epoch from expires_at - coalesce($1::timestamptz, now())) * 1000000)::bigint
FROM twice_leases WHERE service = $2 AND name = $3`,
	list: `
SELECT name, coalesce(holder, ''), token, acquired_at, expires_at,
       (extract(epoch from expires_at - coalesce($1::timestamptz, now())) * 1000000)::bigint
FROM twice_leases
WHERE service = $2 AND left(name, length($3)) = $3
  AND holder IS NOT NULL AND expires_at > coalesce($1::timestamptz, now())
ORDER BY name`,
}

const sqliteNow = store.SQLiteNow

// SQLite has one writer at a time, so the statements need no row locks: a fenced write's
// transaction holds the write lock, and no acquisition can run until it ends.
var sqliteQueries = queries{
	acquire: `
UPDATE twice_leases
SET holder = $4, token = token + 1, ttl_ms = $5,
    acquired_at = coalesce($1, ` + sqliteNow + `),
    expires_at = coalesce($1, ` + sqliteNow + `) + $5 * 1000
WHERE service = $2 AND name = $3
  AND (holder IS NULL OR expires_at <= coalesce($1, ` + sqliteNow + `))
RETURNING token`,
	insert: `
INSERT INTO twice_leases (service, name, holder, token, ttl_ms, acquired_at, expires_at)
VALUES ($2, $3, $4, 1, $5, coalesce($1, ` + sqliteNow + `), coalesce($1, ` + sqliteNow + `) + $5 * 1000)
ON CONFLICT (service, name) DO NOTHING
RETURNING token`,
	renew: `
UPDATE twice_leases SET expires_at = coalesce($1, ` + sqliteNow + `) + ttl_ms * 1000
WHERE service = $2 AND holder = $3
RETURNING name, token`,
	release: `
UPDATE twice_leases SET holder = NULL, expires_at = coalesce($1, ` + sqliteNow + `)
WHERE service = $2 AND name = $3 AND holder = $4 AND token = $5`,
	releaseAll: `
UPDATE twice_leases SET holder = NULL, expires_at = coalesce($1, ` + sqliteNow + `)
WHERE service = $2 AND holder = $3`,
	check: `SELECT holder, token, $3 FROM twice_leases WHERE service = $1 AND name = $2`,
	info: `
SELECT name, coalesce(holder, ''), token, acquired_at, expires_at,
       expires_at - coalesce($1, ` + sqliteNow + `)
FROM twice_leases WHERE service = $2 AND name = $3`,
	list: `
SELECT name, coalesce(holder, ''), token, acquired_at, expires_at,
       expires_at - coalesce($1, ` + sqliteNow + `)
FROM twice_leases
WHERE service = $2 AND substr(name, 1, length($3)) = $3
  AND holder IS NOT NULL AND expires_at > coalesce($1, ` + sqliteNow + `)
ORDER BY name`,
}

// templates are the statements of dialect d as written, before [store.Store.SQL].
func templates(d store.Dialect) queries {
	if d == store.SQLite {
		return sqliteQueries
	}
	return pgQueries
}

// queriesFor returns the statements of s's dialect as s runs them (its schema's tables
// named in full, see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates(s.Dialect())
	s.SQLAll(&q)
	return q
}
