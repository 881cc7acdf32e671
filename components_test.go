package twice_test

import (
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
)

// TestComponentsDeclareTheirTables: every table a block's migrations create is declared by
// its Component, on each database, so the code that reaches tables through the
// declarations (removing a service's rows, say) misses none.
func TestComponentsDeclareTheirTables(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		testdb.CheckTables(t, db, twice.Components()...)
	})
}
