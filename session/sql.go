package session

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the sessions' schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("session", migrations,
		store.Table{Name: "twice_sessions", Service: "service"},
		store.Table{Name: "twice_session_values", Parent: &store.Parent{Table: "twice_sessions", Column: "session_id", Key: "id"}},
		store.Table{Name: "twice_scs_sessions", Service: "service"})
}

// queries are the session statements. Where a statement depends on time, $1 is "now"
// (NULL for database time) and is read once, as n.
type queries struct {
	create, load, touch, renew, put, remove, pop string
	clearValues, destroy, user, id, list, count  string
	prune, pruneSCS                              string
	scsFind, scsCommit, scsDelete                string
	// The values of the sessions that destroy, user, id and prune delete, deleted first
	// and explicitly on SQLite, empty on PostgreSQL (see [Sessions.delete]). On PostgreSQL
	// the foreign key's cascade deletes the values with the session row, locking rows in
	// the order a save does (session, then values), so a destroy and a concurrent save
	// cannot deadlock. SQLite has one writer and no such deadlock, but enforces the
	// cascade only on connections with foreign_keys on, which a caller's own connection
	// may lack.
	destroyValues, userValues, idValues, pruneValues string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
// SQLite has no least(); its min() of two or more arguments is the same function.
var templates = queries{
	create: `
INSERT INTO twice_sessions (id, service, token_hash, user_id, user_agent, idle_ms, created_at, seen_at, expires_at, deadline)
SELECT $2, $3, $4, $5, $6, $7, t.n, t.n, t.n + {ms $8::bigint}, {pg least}{sqlite min}(t.n + {ms $8::bigint}, t.n + {ms $7::bigint})
FROM (SELECT {now} AS n) t
RETURNING expires_at`,
	// One round trip: the session and all its values, or no row.
	load: `
SELECT s.id, coalesce(s.user_id, ''), s.seen_at, s.expires_at, t.n, v.key, v.value
FROM (SELECT {now} AS n) t
JOIN twice_sessions s ON s.service = $2 AND s.token_hash = $3 AND s.deadline > t.n
LEFT JOIN twice_session_values v ON v.session_id = s.id`,
	// The token is part of the condition: a request still holding a token that was
	// renewed or destroyed meanwhile changes nothing.
	touch: `
UPDATE twice_sessions SET seen_at = t.n, deadline = {pg least}{sqlite min}(expires_at, t.n + {ms idle_ms::bigint})
FROM (SELECT {now} AS n) t
WHERE id = $2 AND token_hash = $3 AND deadline > t.n
RETURNING expires_at`,
	renew: `
UPDATE twice_sessions SET token_hash = $4, user_id = $5, seen_at = t.n, deadline = {pg least}{sqlite min}(expires_at, t.n + {ms idle_ms::bigint})
FROM (SELECT {now} AS n) t
WHERE id = $2 AND token_hash = $3 AND deadline > t.n
RETURNING expires_at`,
	// A request writes a key only if no request that began after it ($5: when this one
	// loaded the session; NULL for a session it created) has written the key since: a
	// request held up (an instance paused mid-request, whose client retried elsewhere)
	// must not put an old value back over a newer one.
	put: `
INSERT INTO twice_session_values (session_id, key, value, updated_at) VALUES ($2, $3, $4, {now})
ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
WHERE $5::timestamptz IS NULL OR twice_session_values.updated_at <= $5::timestamptz
RETURNING updated_at`,
	remove:      `DELETE FROM twice_session_values WHERE session_id = $1 AND key = $2 AND ($3::timestamptz IS NULL OR updated_at <= $3::timestamptz)`,
	pop:         `DELETE FROM twice_session_values WHERE session_id = $1 AND key = $2 RETURNING value`,
	clearValues: `DELETE FROM twice_session_values WHERE session_id = $1`,
	destroy:     `DELETE FROM twice_sessions WHERE id = $1`,
	user:        `DELETE FROM twice_sessions WHERE service = $1 AND user_id = $2`,
	id:          `DELETE FROM twice_sessions WHERE service = $1 AND id = $2`,
	list: `
SELECT s.id, s.user_agent, s.created_at, s.seen_at, s.expires_at, s.deadline
FROM (SELECT {now} AS n) t
JOIN twice_sessions s ON s.service = $2 AND s.user_id = $3 AND s.deadline > t.n
ORDER BY s.seen_at DESC, s.id`,
	// count counts the live sessions, by the index on the deadline.
	count: `
SELECT count(*), count(DISTINCT s.user_id)
FROM (SELECT {now} AS n) t
JOIN twice_sessions s ON s.service = $2 AND s.deadline > t.n`,
	prune: `
DELETE FROM twice_sessions WHERE id IN (
	SELECT id FROM twice_sessions WHERE service = $2 AND deadline <= {now} LIMIT $3)`,
	pruneSCS: `
DELETE FROM twice_scs_sessions WHERE (service, token_hash) IN (
	SELECT service, token_hash FROM twice_scs_sessions WHERE service = $2 AND expires_at <= {now} LIMIT $3)`,
	scsFind: `
SELECT data FROM twice_scs_sessions WHERE service = $2 AND token_hash = $3 AND expires_at > {now}`,
	scsCommit: `
INSERT INTO twice_scs_sessions (service, token_hash, data, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (service, token_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at`,
	scsDelete:     `DELETE FROM twice_scs_sessions WHERE service = $1 AND token_hash = $2`,
	destroyValues: `{sqlite DELETE FROM twice_session_values WHERE session_id = $1}`,
	userValues: `{sqlite
DELETE FROM twice_session_values
WHERE session_id IN (SELECT id FROM twice_sessions WHERE service = $1 AND user_id = $2)}`,
	idValues: `{sqlite
DELETE FROM twice_session_values
WHERE session_id IN (SELECT id FROM twice_sessions WHERE service = $1 AND id = $2)}`,
	pruneValues: `{sqlite
DELETE FROM twice_session_values WHERE session_id IN (
	SELECT id FROM twice_sessions WHERE service = $2 AND deadline <= {now} LIMIT $3)}`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
