package settings

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the settings tables' schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("settings", migrations,
		store.Table{Name: "twice_settings", Service: "service"},
		store.Table{Name: "twice_settings_history", Service: "service"},
		store.Table{Name: "twice_settings_revs", Service: "service"})
}

// queries are the settings statements.
type queries struct {
	nextRev, current, upsert, record, prune, changes, history string
}

// columns every read of a setting returns, in the order [scanSetting] expects.
const columns = "key, type, value, version, rev, deleted, updated_at, instance, actor"

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	nextRev: `
INSERT INTO twice_settings_revs (service, rev) VALUES ($1, 1)
ON CONFLICT (service) DO UPDATE SET rev = twice_settings_revs.rev + 1
RETURNING rev`,
	current: `SELECT type, version, deleted FROM twice_settings WHERE service = $1 AND key = $2`,
	// $1 is "now".
	upsert: `
INSERT INTO twice_settings (service, key, type, value, version, rev, deleted, updated_at, instance, actor)
VALUES ($2, $3, $4, $5, $6, $7, $8, {now}, $9, $10)
ON CONFLICT (service, key) DO UPDATE
SET type = excluded.type, value = excluded.value, version = excluded.version, rev = excluded.rev,
    deleted = excluded.deleted, updated_at = excluded.updated_at, instance = excluded.instance, actor = excluded.actor
RETURNING updated_at`,
	record: `
INSERT INTO twice_settings_history (service, key, version, rev, type, value, deleted, at, instance, actor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
	prune:   `DELETE FROM twice_settings_history WHERE service = $1 AND key = $2 AND version <= $3`,
	changes: `SELECT ` + columns + ` FROM twice_settings WHERE service = $1 AND rev > $2 ORDER BY rev`,
	history: `
SELECT key, type, value, version, rev, deleted, at, instance, actor FROM twice_settings_history
WHERE service = $1 AND ($2::text = '' OR key = $2) ORDER BY rev DESC LIMIT $3`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
