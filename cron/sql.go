package cron

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the schedule table's schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("cron", migrations, store.Table{Name: "twice_cron", Service: "service"})
}

// queries are the schedule statements; $1 is "now" in each that reads the time.
type queries struct {
	upsert, undeclare, lock, advance, list, get string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	upsert: `
INSERT INTO twice_cron (service, name, expr, tz, kind, args, opts, declared, updated_at)
VALUES ($2, $3, $4, $5, $6, $7, $8, true, {now})
ON CONFLICT (service, name) DO UPDATE
SET expr = excluded.expr, tz = excluded.tz, kind = excluded.kind, args = excluded.args, opts = excluded.opts,
    declared = true,
    updated_at = CASE WHEN twice_cron.expr <> excluded.expr OR twice_cron.tz <> excluded.tz OR NOT twice_cron.declared
                      THEN excluded.updated_at ELSE twice_cron.updated_at END`,
	undeclare: `UPDATE twice_cron SET declared = false WHERE service = $1 AND declared AND name {notin $2 text}`,
	// On PostgreSQL the row lock makes two leaders take turns on a schedule; the tick's
	// unique key would keep them from firing it twice even without it. SQLite's single
	// writer needs none.
	lock: `
SELECT last_tick, last_job_id, updated_at, {now} FROM twice_cron
WHERE service = $2 AND name = $3{pg
FOR UPDATE}`,
	advance: `
UPDATE twice_cron SET last_tick = $3, last_job_id = coalesce($4, last_job_id), declared = true
WHERE service = $1 AND name = $2 AND (last_tick IS NULL OR last_tick < $3)`,
	list: `
SELECT name, expr, tz, kind, args, opts, declared, last_tick, last_job_id, updated_at
FROM twice_cron WHERE service = $1 ORDER BY name`,
	get: `SELECT kind, args, opts FROM twice_cron WHERE service = $1 AND name = $2`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) *queries {
	q := templates
	s.SQLAll(&q)
	return &q
}
