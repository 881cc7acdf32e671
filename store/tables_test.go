package store_test

import (
	"context"
	"embed"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// TestLoadComponentChecksTables: a declaration that cannot be right is refused when the
// component loads, not when a statement built from it fails.
func TestLoadComponentChecksTables(t *testing.T) {
	t.Parallel()
	sub, err := fs.Sub(compFS, "testdata/comp")
	if err != nil {
		t.Fatal(err)
	}
	widgets := store.Table{Name: "widgets", Service: "service"}
	for _, tc := range []struct {
		tables  []store.Table
		wantErr string
	}{
		{tables: []store.Table{widgets}},
		{tables: []store.Table{widgets, {Name: "parts", Parent: &store.Parent{Table: "widgets", Column: "widget_id", Key: "id"}}}},
		{tables: []store.Table{widgets, widgets}, wantErr: "twice"},
		{tables: []store.Table{{Name: "widgets; DROP TABLE x", Service: "service"}}, wantErr: "plain lower-case identifier"},
		{tables: []store.Table{{Name: "widgets", Service: "Service"}}, wantErr: "plain lower-case identifier"},
		{tables: []store.Table{widgets, {Name: "parts", Service: "service", Parent: &store.Parent{Table: "widgets", Column: "widget_id", Key: "id"}}}, wantErr: "both"},
		{tables: []store.Table{{Name: "parts", Parent: &store.Parent{Table: "widgets", Column: "widget_id", Key: "id"}}}, wantErr: "parent"},
		{tables: []store.Table{{Name: "widgets", Service: "service", Dialect: "mysql"}}, wantErr: "unknown dialect"},
	} {
		_, err := store.LoadComponent("widgets", sub, tc.tables...)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("LoadComponent(%+v) = %v, want %q", tc.tables, err, tc.wantErr)
		}
	}
}

//go:embed testdata/owned
var ownedFS embed.FS

// TestDeleteService: a service's rows go from its tables and from the child tables that
// belong to them (found through the parent, not through a foreign key), in one
// transaction; other services' rows and the rows of every service stay.
func TestDeleteService(t *testing.T) {
	t.Parallel()
	sub, err := fs.Sub(ownedFS, "testdata/owned")
	if err != nil {
		t.Fatal(err)
	}
	c, err := store.LoadComponent("owned", sub,
		store.Table{Name: "twice_test_orders", Service: "service"},
		store.Table{Name: "twice_test_lines", Parent: &store.Parent{Table: "twice_test_orders", Column: "order_id", Key: "id"}},
		store.Table{Name: "twice_test_rates"})
	if err != nil {
		t.Fatal(err)
	}
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := db.Open(t, nil)
		if _, err := store.NewMigrator(s, c).Up(ctx); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"INSERT INTO twice_test_orders (id, service) VALUES ('o1', 'gone'), ('o2', 'gone'), ('o3', 'kept')",
			"INSERT INTO twice_test_lines (order_id, sku) VALUES ('o1', 'a'), ('o1', 'b'), ('o2', 'a'), ('o3', 'a')",
			"INSERT INTO twice_test_rates (currency) VALUES ('EUR')",
		} {
			if _, err := s.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		if svcs, err := store.Services(ctx, s, c); err != nil || !slices.Equal(svcs, []string{"gone", "kept"}) {
			t.Fatalf("Services before = %v, %v", svcs, err)
		}
		n, err := store.DeleteService(ctx, s, "gone", c)
		if err != nil || n != 5 {
			t.Fatalf("DeleteService = %d, %v; want the 2 orders and their 3 lines", n, err)
		}
		var orders, lines, rates string
		if err := s.QueryRow(ctx, `SELECT
			(SELECT string_agg(id, ',') FROM twice_test_orders),
			(SELECT string_agg(order_id || sku, ',') FROM twice_test_lines),
			(SELECT string_agg(currency, ',') FROM twice_test_rates)`).Scan(&orders, &lines, &rates); err != nil {
			t.Fatal(err)
		}
		if orders != "o3" || lines != "o3a" || rates != "EUR" {
			t.Errorf("left orders %q, lines %q, rates %q; want o3, o3a, EUR", orders, lines, rates)
		}
		if svcs, err := store.Services(ctx, s, c); err != nil || !slices.Equal(svcs, []string{"kept"}) {
			t.Errorf("Services after = %v, %v", svcs, err)
		}
	})
}
