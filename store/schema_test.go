package store_test

import (
	"context"
	"testing"

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
