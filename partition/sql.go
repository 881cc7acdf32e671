package partition

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the partition sets' table, for [store.Migrator]. The assignments themselves
// are leases (twice_leases).
func Component() store.Component {
	return store.MustLoadComponent("partition", migrations, store.Table{Name: "twice_partition_sets", Service: "service"})
}

// queries are the partition statements.
type queries struct {
	define, defined string
}

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
var templates = queries{
	// $1 is "now".
	define: `
INSERT INTO twice_partition_sets (service, name, partitions, created_at)
VALUES ($2, $3, $4, {now}) ON CONFLICT DO NOTHING`,
	defined: `SELECT partitions FROM twice_partition_sets WHERE service = $1 AND name = $2`,
}

func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
