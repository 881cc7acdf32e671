package realtime

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the realtime tables' schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("realtime", migrations,
		store.Table{Name: "twice_realtime_rooms", Service: "service"},
		store.Table{Name: "twice_realtime_messages", Service: "service"})
}

// queries are the realtime statements; $1 is "now" in each that reads the time.
type queries struct {
	next, insert, head, fetch        string
	pruneCount, pruneAge, pruneRooms string
	resetMessages, resetRoom         string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	// next gives the stream's next offset, making its row (and epoch, $4) if it has none.
	// The row's lock is held until the caller's commit: offsets commit in order.
	next: `
INSERT INTO twice_realtime_rooms (service, room, epoch, top, at) VALUES ($2, $3, $4, 1, {now})
ON CONFLICT (service, room) DO UPDATE SET top = twice_realtime_rooms.top + 1, at = {now}
RETURNING top, epoch`,
	insert: `INSERT INTO twice_realtime_messages (service, room, off, data, at) VALUES ($2, $3, $4, $5, {now})`,
	// head is a stream's epoch, last offset and first offset still in the history (0: none).
	head: `
SELECT r.epoch, r.top, coalesce((SELECT min(m.off) FROM twice_realtime_messages m
  WHERE m.service = r.service AND m.room = r.room), 0)
FROM twice_realtime_rooms r WHERE r.service = $1 AND r.room = $2`,
	// fetch reads a stream's epoch and last offset with its messages after offset $3, in
	// one statement (one snapshot): the messages read are every one committed up to top.
	fetch: `
SELECT r.epoch, r.top, m.off, m.data
FROM twice_realtime_rooms r LEFT JOIN twice_realtime_messages m
  ON m.service = r.service AND m.room = r.room AND m.off > $3
WHERE r.service = $1 AND r.room = $2
ORDER BY m.off LIMIT $4`,
	// pruneCount keeps the last $2 messages of each stream.
	pruneCount: `
DELETE FROM twice_realtime_messages
WHERE service = $1 AND off <= (SELECT r.top FROM twice_realtime_rooms r
  WHERE r.service = twice_realtime_messages.service AND r.room = twice_realtime_messages.room) - $2`,
	pruneAge: `DELETE FROM twice_realtime_messages WHERE service = $2 AND at < {now} - {ms $3}`,
	// pruneRooms forgets the streams with no history left and no message for $3 ms: one
	// published to again starts a new epoch, so a client still holding a position in the
	// old one is told its recovery is impossible.
	pruneRooms: `
DELETE FROM twice_realtime_rooms
WHERE service = $2 AND at < {now} - {ms $3} AND NOT EXISTS (SELECT 1 FROM twice_realtime_messages m
  WHERE m.service = twice_realtime_rooms.service AND m.room = twice_realtime_rooms.room)`,
	resetMessages: `DELETE FROM twice_realtime_messages WHERE service = $1 AND room = $2`,
	resetRoom:     `DELETE FROM twice_realtime_rooms WHERE service = $1 AND room = $2`,
}

// queriesFor returns the statements as s runs them (see [store.Store.SQL]).
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
