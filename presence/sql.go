package presence

import (
	"embed"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the presence tables' schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("presence", migrations,
		store.Table{Name: "twice_presence", Service: "service"},
		store.Table{Name: "twice_presence_revs", Service: "service"})
}

// queries are the presence statements; $1 is "now" in each that reads the time.
type queries struct {
	connect, join, exists, leave, disconnect, bump string
	clearOld, clearMine, purgeDead, purgeAll       string
	check, load                                    string
}

// deadOwner is true for the members of service $2 that are dead and still own entries:
// one probe of the entries' index per member, so a look costs what the membership does,
// not what the entries do.
var deadOwner = `EXISTS (SELECT 1 FROM twice_members d
  WHERE d.service = $2 AND NOT ` + cluster.Alive("d.service", "d.id", "{now}") + `
    AND EXISTS (SELECT 1 FROM twice_presence o WHERE o.service = d.service AND o.instance = d.id))`

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	connect: `
INSERT INTO twice_presence (service, conn, room, user_id, instance, incarnation, at)
VALUES ($2, $3, '', $4, $5, $6, {now})
ON CONFLICT (service, conn, room) DO NOTHING`,
	// join puts connection $3 in room $4, copying its owner from the connection's row, so
	// that a connection already gone (closed, or deleted while its instance was counted
	// dead) joins nothing.
	join: `
INSERT INTO twice_presence (service, conn, room, user_id, instance, incarnation, at)
SELECT service, conn, $4, user_id, instance, incarnation, {now} FROM twice_presence
WHERE service = $2 AND conn = $3 AND room = ''
ON CONFLICT (service, conn, room) DO NOTHING`,
	exists:     `SELECT count(*) FROM twice_presence WHERE service = $1 AND conn = $2 AND room = ''`,
	leave:      `DELETE FROM twice_presence WHERE service = $1 AND conn = $2 AND room = $3 AND room <> ''`,
	disconnect: `DELETE FROM twice_presence WHERE service = $1 AND conn = $2`,
	// bump moves the service's revision, last in a change's transaction: its lock is held
	// until the commit, so no two changes commit with one revision.
	bump: `
INSERT INTO twice_presence_revs (service, rev) VALUES ($1, 1)
ON CONFLICT (service) DO UPDATE SET rev = twice_presence_revs.rev + 1`,
	// clearOld deletes what this instance's previous process left, at start.
	clearOld: `DELETE FROM twice_presence WHERE service = $1 AND instance = $2 AND incarnation <> $3`,
	// clearMine deletes every entry of this instance, at a graceful close.
	clearMine: `DELETE FROM twice_presence WHERE service = $1 AND instance = $2`,
	// purgeDead deletes the entries of the members found dead, by the entries' index.
	purgeDead: `
DELETE FROM twice_presence
WHERE service = $2 AND instance IN (SELECT d.id FROM twice_members d
  WHERE d.service = $2 AND NOT ` + cluster.Alive("d.service", "d.id", "{now}") + `)`,
	// purgeAll also deletes the entries of instances that have no member row any more
	// (reaped, or gone with a Leave that did not close their presence): the leader's
	// backstop, which reads every entry of the service.
	purgeAll: `
DELETE FROM twice_presence
WHERE service = $2 AND NOT ` + cluster.Alive("twice_presence.service", "twice_presence.instance", "{now}"),
	// check is a poll's look: the revision, whether a dead member still owns entries, and
	// whether this instance ($3) is alive, so that it puts back its missing entries only
	// when no one would delete them again.
	check: `SELECT coalesce((SELECT rev FROM twice_presence_revs WHERE service = $2), 0), ` + deadOwner + `,
  ` + cluster.Alive("$2", "$3", "{now}"),
	// load reads the service's entries whose instance is alive, with its address.
	load: `
SELECT p.conn, p.room, p.user_id, p.instance, m.addr, p.at
FROM twice_presence p JOIN twice_members m ON m.service = p.service AND m.id = p.instance
WHERE p.service = $2 AND ` + cluster.Alive("p.service", "p.instance", "{now}") + `
ORDER BY p.conn, p.room`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
