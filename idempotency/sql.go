package idempotency

import (
	"embed"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the idempotency keys' schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("idempotency", migrations, store.Table{Name: "twice_idempotency", Service: "service"})
}

// Row states.
const (
	stateRunning   = 0
	stateDone      = 1
	stateNotStored = 2
)

// queries are the idempotency statements; where time matters $1 is "now".
type queries struct {
	claim, get, complete, release, prune string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	// Claims the key, or takes over an expired row or a dead owner's claim of the same
	// request; returns no row when someone else holds it. "WHERE true" keeps SQLite from
	// reading ON CONFLICT as a join's ON. A running claim whose owner has not heartbeaten
	// for DeadAfter plus the grace $8 (ms) is free to take over: the request died with its
	// instance, and waiting for the retention ($7, ms) would lock the key for a day.
	// Moving "now" back by the grace makes Alive's test "no beat for DeadAfter + grace".
	claim: `
INSERT INTO twice_idempotency (service, scope, key, fingerprint, owner, state, status, header, body, created_at, expires_at)
SELECT $2, $3, $4, $5, $6, 0, 0, NULL, NULL, t.n, t.n + {ms $7::bigint}
FROM (SELECT {now} AS n) t WHERE true
ON CONFLICT (service, scope, key) DO UPDATE
SET fingerprint = excluded.fingerprint, owner = excluded.owner, state = 0, status = 0, header = NULL, body = NULL,
    created_at = excluded.created_at, expires_at = excluded.expires_at
WHERE twice_idempotency.expires_at <= excluded.created_at
   OR (twice_idempotency.state = 0 AND twice_idempotency.fingerprint = excluded.fingerprint AND
       twice_idempotency.owner <> excluded.owner AND NOT ` +
		cluster.Alive("twice_idempotency.service", "twice_idempotency.owner", "excluded.created_at - {ms $8::bigint}") + `)
RETURNING owner`,
	// The last column is the claim's liveness test, with the grace $5 (ms), so a duplicate
	// of a request running on a live instance is answered without a write.
	get: `
SELECT fingerprint, state, status, header, body, ` +
		cluster.Alive("twice_idempotency.service", "twice_idempotency.owner", "{now} - {ms $5::bigint}") + ` FROM twice_idempotency
WHERE service = $2 AND scope = $3 AND key = $4 AND expires_at > {now}`,
	complete: `
UPDATE twice_idempotency SET state = $5, status = $6, header = $7, body = $8
WHERE service = $1 AND scope = $2 AND key = $3 AND owner = $4 AND state = 0`,
	release: `
DELETE FROM twice_idempotency WHERE service = $1 AND scope = $2 AND key = $3 AND owner = $4 AND state = 0`,
	prune: `
DELETE FROM twice_idempotency WHERE (service, scope, key) IN (
	SELECT service, scope, key FROM twice_idempotency WHERE service = $2 AND expires_at <= {now} LIMIT $3)`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
