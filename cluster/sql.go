package cluster

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the membership table's schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("cluster", migrations, store.Table{Name: "twice_members", Service: "service"})
}

// queries are the membership statements of one dialect; $1 is "now" in each.
type queries struct {
	insert, beat, setState, leave, list, reap string
}

var pgQueries = queries{
	insert: `
INSERT INTO twice_members (service, id, host, pid, version, addr, state, dead_after_ms, started_at, heartbeat_at)
VALUES ($2, $3, $4, $5, $6, $7, $8, $9, coalesce($1::timestamptz, now()), coalesce($1::timestamptz, now()))
ON CONFLICT (service, id) DO UPDATE
SET state = excluded.state, dead_after_ms = excluded.dead_after_ms, heartbeat_at = excluded.heartbeat_at`,
	beat: `
UPDATE twice_members SET heartbeat_at = coalesce($1::timestamptz, now()), state = $4
WHERE service = $2 AND id = $3`,
	setState: `UPDATE twice_members SET state = $3 WHERE service = $1 AND id = $2`,
	leave:    `DELETE FROM twice_members WHERE service = $1 AND id = $2`,
	list: `
SELECT id, service, host, pid, version, addr, state, started_at, heartbeat_at, dead_after_ms,
       (extract(epoch from coalesce($1::timestamptz, now()) - heartbeat_at) * 1000000)::bigint,
       (extract(epoch from coalesce($1::timestamptz, now()) - started_at) * 1000000)::bigint
FROM twice_members WHERE service = $2 ORDER BY started_at, id`,
	reap: `
DELETE FROM twice_members
WHERE service = $2
  AND heartbeat_at < coalesce($1::timestamptz, now()) - (dead_after_ms + $3::bigint) * interval '1 millisecond'`,
}

const sqliteNow = store.SQLiteNow

var sqliteQueries = queries{
	insert: `
INSERT INTO twice_members (service, id, host, pid, version, addr, state, dead_after_ms, started_at, heartbeat_at)
VALUES ($2, $3, $4, $5, $6, $7, $8, $9, coalesce($1, ` + sqliteNow + `), coalesce($1, ` + sqliteNow + `))
ON CONFLICT (service, id) DO UPDATE
SET state = excluded.state, dead_after_ms = excluded.dead_after_ms, heartbeat_at = excluded.heartbeat_at`,
	beat: `
UPDATE twice_members SET heartbeat_at = coalesce($1, ` + sqliteNow + `), state = $4
WHERE service = $2 AND id = $3`,
	setState: `UPDATE twice_members SET state = $3 WHERE service = $1 AND id = $2`,
	leave:    `DELETE FROM twice_members WHERE service = $1 AND id = $2`,
	list: `
SELECT id, service, host, pid, version, addr, state, started_at, heartbeat_at, dead_after_ms,
       coalesce($1, ` + sqliteNow + `) - heartbeat_at, coalesce($1, ` + sqliteNow + `) - started_at
FROM twice_members WHERE service = $2 ORDER BY started_at, id`,
	reap: `
DELETE FROM twice_members
WHERE service = $2 AND heartbeat_at < coalesce($1, ` + sqliteNow + `) - (dead_after_ms + $3) * 1000`,
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

// AliveSQL is a boolean SQL expression, true while the member with id idExpr of service
// serviceExpr is alive, for building blocks that rescue work by its owner's liveness. nowExpr
// is the query's "now" (see [store.Dialect.Now]). It names twice_members as written: build
// the statement that uses it with [store.Store.SQL].
func AliveSQL(d store.Dialect, serviceExpr, idExpr, nowExpr string) string {
	if d == store.SQLite {
		return "EXISTS (SELECT 1 FROM twice_members m WHERE m.service = " + serviceExpr + " AND m.id = " + idExpr +
			" AND m.heartbeat_at > " + nowExpr + " - m.dead_after_ms * 1000)"
	}
	return "EXISTS (SELECT 1 FROM twice_members m WHERE m.service = " + serviceExpr + " AND m.id = " + idExpr +
		" AND m.heartbeat_at > " + nowExpr + " - m.dead_after_ms * interval '1 millisecond')"
}
