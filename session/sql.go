package session

import (
	"embed"
	"strings"

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

// queries are the session statements of one dialect. Where a statement depends on time, $1
// is "now" (NULL for database time) and is read once, as n.
type queries struct {
	create, load, touch, renew, put, remove, pop string
	destroyValues, destroy                       string
	userValues, user, list, idValues, id         string
	pruneValues, prune, pruneSCS                 string
	scsFind, scsCommit, scsDelete                string
}

// pgQueries are written once with markers replaced per dialect: NOW for the time source,
// MS(x) for "x milliseconds" and TS(x) for a parameter that is a time.
var pgQueries = build(
	"coalesce($1::timestamptz, now())",
	func(x string) string { return "(" + x + ")::bigint * interval '1 millisecond'" },
	func(x string) string { return x + "::timestamptz" },
	"least",
)

var sqliteQueries = build(
	"coalesce($1, "+store.SQLiteNow+")",
	func(x string) string { return "(" + x + ") * 1000" },
	func(x string) string { return x },
	"min",
)

func build(now string, ms, ts func(string) string, least string) queries {
	r := strings.NewReplacer(
		"NOW", now,
		"MS(idle_ms)", ms("idle_ms"),
		"MS($7)", ms("$7"),
		"MS($8)", ms("$8"),
		"TS($3)", ts("$3"),
		"TS($5)", ts("$5"),
		"LEAST", least,
	)
	q := queries{
		create: `
INSERT INTO twice_sessions (id, service, token_hash, user_id, user_agent, idle_ms, created_at, seen_at, expires_at, deadline)
SELECT $2, $3, $4, $5, $6, $7, t.n, t.n, t.n + MS($8), LEAST(t.n + MS($8), t.n + MS($7))
FROM (SELECT NOW AS n) t
RETURNING expires_at`,
		// One round trip: the session and all its values, or no row.
		load: `
SELECT s.id, coalesce(s.user_id, ''), s.seen_at, s.expires_at, t.n, v.key, v.value
FROM (SELECT NOW AS n) t
JOIN twice_sessions s ON s.service = $2 AND s.token_hash = $3 AND s.deadline > t.n
LEFT JOIN twice_session_values v ON v.session_id = s.id`,
		// The token is part of the condition: a request still holding a token that was
		// renewed or destroyed meanwhile changes nothing.
		touch: `
UPDATE twice_sessions SET seen_at = t.n, deadline = LEAST(expires_at, t.n + MS(idle_ms))
FROM (SELECT NOW AS n) t
WHERE id = $2 AND token_hash = $3 AND deadline > t.n
RETURNING expires_at`,
		renew: `
UPDATE twice_sessions SET token_hash = $4, user_id = $5, seen_at = t.n, deadline = LEAST(expires_at, t.n + MS(idle_ms))
FROM (SELECT NOW AS n) t
WHERE id = $2 AND token_hash = $3 AND deadline > t.n
RETURNING expires_at`,
		// A request writes a key only if no request that began after it ($5: when this one
		// loaded the session; NULL for a session it created) has written the key since: a
		// request held up (an instance paused mid-request, whose client retried elsewhere)
		// must not put an old value back over a newer one.
		put: `
INSERT INTO twice_session_values (session_id, key, value, updated_at) VALUES ($2, $3, $4, NOW)
ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
WHERE TS($5) IS NULL OR twice_session_values.updated_at <= TS($5)
RETURNING updated_at`,
		remove:        `DELETE FROM twice_session_values WHERE session_id = $1 AND key = $2 AND (TS($3) IS NULL OR updated_at <= TS($3))`,
		pop:           `DELETE FROM twice_session_values WHERE session_id = $1 AND key = $2 RETURNING value`,
		destroyValues: `DELETE FROM twice_session_values WHERE session_id = $1`,
		destroy:       `DELETE FROM twice_sessions WHERE id = $1`,
		userValues: `
DELETE FROM twice_session_values
WHERE session_id IN (SELECT id FROM twice_sessions WHERE service = $1 AND user_id = $2)`,
		user: `DELETE FROM twice_sessions WHERE service = $1 AND user_id = $2`,
		idValues: `
DELETE FROM twice_session_values
WHERE session_id IN (SELECT id FROM twice_sessions WHERE service = $1 AND id = $2)`,
		id: `DELETE FROM twice_sessions WHERE service = $1 AND id = $2`,
		list: `
SELECT s.id, s.user_agent, s.created_at, s.seen_at, s.expires_at, s.deadline
FROM (SELECT NOW AS n) t
JOIN twice_sessions s ON s.service = $2 AND s.user_id = $3 AND s.deadline > t.n
ORDER BY s.seen_at DESC, s.id`,
		pruneValues: `
DELETE FROM twice_session_values WHERE session_id IN (
	SELECT id FROM twice_sessions WHERE service = $2 AND deadline <= NOW LIMIT $3)`,
		prune: `
DELETE FROM twice_sessions WHERE id IN (
	SELECT id FROM twice_sessions WHERE service = $2 AND deadline <= NOW LIMIT $3)`,
		pruneSCS: `
DELETE FROM twice_scs_sessions WHERE (service, token_hash) IN (
	SELECT service, token_hash FROM twice_scs_sessions WHERE service = $2 AND expires_at <= NOW LIMIT $3)`,
		scsFind: `
SELECT data FROM twice_scs_sessions WHERE service = $2 AND token_hash = $3 AND expires_at > NOW`,
		scsCommit: `
INSERT INTO twice_scs_sessions (service, token_hash, data, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (service, token_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at`,
		scsDelete: `DELETE FROM twice_scs_sessions WHERE service = $1 AND token_hash = $2`,
	}
	for _, p := range []*string{&q.create, &q.load, &q.touch, &q.renew, &q.put, &q.remove, &q.list, &q.pruneValues, &q.prune, &q.pruneSCS, &q.scsFind} {
		*p = r.Replace(*p)
	}
	return q
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
