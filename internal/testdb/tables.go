package testdb

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/twicehq/twice/store"
)

// CheckTables migrates comps one at a time into db, which must be empty, and fails t
// unless the tables each one's migrations create are exactly the tables it declares
// ([store.Component.Tables]) for db's dialect, each with the columns its declaration names.
// The database's own catalog is the judge, not the migrations' text.
func CheckTables(t *testing.T, db DB, comps ...store.Component) {
	t.Helper()
	ctx := context.Background()
	s := db.Open(t, nil)
	have := tableNames(t, s)
	for _, c := range comps {
		if _, err := store.NewMigrator(s, c).Up(ctx); err != nil {
			t.Fatalf("migrate %s: %v", c.Name, err)
		}
		now := tableNames(t, s)
		created := map[string]bool{}
		for n := range now {
			if !have[n] && n != "twice_migrations" {
				created[n] = true
			}
		}
		have = now
		declared := map[string]bool{}
		for _, tb := range c.TablesIn(db.Dialect) {
			declared[tb.Name] = true
			if !created[tb.Name] {
				t.Errorf("component %s declares table %s, which its %s migrations do not create", c.Name, tb.Name, db.Dialect)
				continue
			}
			cols := columnNames(t, s, tb.Name)
			want := []string{tb.Service}
			if p := tb.Parent; p != nil {
				want = []string{p.Column}
				if !slices.Contains(columnNames(t, s, p.Table), p.Key) {
					t.Errorf("component %s: table %s's parent %s has no column %s", c.Name, tb.Name, p.Table, p.Key)
				}
			}
			for _, col := range want {
				if col != "" && !slices.Contains(cols, col) {
					t.Errorf("component %s: table %s has no column %s (it has %v)", c.Name, tb.Name, col, cols)
				}
			}
		}
		for _, n := range slices.Sorted(maps.Keys(created)) {
			if !declared[n] {
				t.Errorf("component %s creates table %s on %s but does not declare it", c.Name, n, db.Dialect)
			}
		}
	}
}

// tableNames lists the tables in s's schema (its file on SQLite).
func tableNames(t *testing.T, s *store.Store) map[string]bool {
	t.Helper()
	q, args := "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'", []any{}
	if s.Dialect() == store.Postgres {
		q, args = "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'", []any{s.Schema()}
	}
	out := map[string]bool{}
	for _, n := range queryStrings(t, s, q, args...) {
		out[n] = true
	}
	return out
}

// columnNames lists the columns of table in s.
func columnNames(t *testing.T, s *store.Store, table string) []string {
	t.Helper()
	if s.Dialect() == store.Postgres {
		return queryStrings(t, s, "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2", s.Schema(), table)
	}
	return queryStrings(t, s, "SELECT name FROM pragma_table_info($1)", table)
}

func queryStrings(t *testing.T, s *store.Store, q string, args ...any) []string {
	t.Helper()
	rows, err := s.Reader().Query(context.Background(), q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
