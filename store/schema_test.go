package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// A role that may only use its schema (no CREATE on the database) migrates it: CREATE
// SCHEMA IF NOT EXISTS needs that privilege even when the schema exists.
func TestMigrateWithSchemaPrivilegesOnly(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres).LimitedRole(t, -1)
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, widgets(t)).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A schema whose name needs quoting (mixed case, a dot) works like any other: search_path
// is set quoted, as CREATE SCHEMA quotes it.
func TestSchemaNeedingQuotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t, store.Postgres)
	for _, name := range []string{"Mixed_" + base.Schema, base.Schema + ".Dotted"} {
		db := base.InSchema(t, name)
		s := db.Open(t, nil)
		if s.Schema() != name {
			t.Fatalf("Schema() = %q, want %q", s.Schema(), name)
		}
		if _, err := store.NewMigrator(s, widgets(t)).Up(ctx); err != nil {
			t.Fatalf("schema %q: %v", name, err)
		}
		if _, err := s.Exec(ctx, "INSERT INTO twice_test_widgets (name) VALUES ('w')"); err != nil {
			t.Fatalf("schema %q: %v", name, err)
		}
		var n int
		q := "SELECT count(*) FROM " + pgx.Identifier{name, "twice_test_widgets"}.Sanitize()
		if err := s.Pool().QueryRow(ctx, q).Scan(&n); err != nil || n != 1 {
			t.Fatalf("schema %q has %d widgets (%v), want 1", name, n, err)
		}
	}
}
