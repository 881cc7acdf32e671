package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

func TestQualifyTables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT * FROM twice_jobs WHERE id = $1", `SELECT * FROM "S".twice_jobs WHERE id = $1`},
		{"INSERT INTO twice_jobs (service) VALUES ($1)", `INSERT INTO "S".twice_jobs (service) VALUES ($1)`},
		{"UPDATE twice_jobs j SET x = 1 FROM twice_job_keys k WHERE j.id = k.job_id",
			`UPDATE "S".twice_jobs j SET x = 1 FROM "S".twice_job_keys k WHERE j.id = k.job_id`},
		// a sequence named in a string literal, as regclass takes it
		{"SELECT nextval('twice_jobs_id_seq')", `SELECT nextval('"S".twice_jobs_id_seq')`},
		// already qualified, a qualifier of a column, or a constraint: unchanged
		{`SELECT x FROM "S".twice_jobs`, `SELECT x FROM "S".twice_jobs`},
		{"SELECT twice_jobs.id FROM twice_jobs", `SELECT twice_jobs.id FROM "S".twice_jobs`},
		{"ON CONFLICT ON CONSTRAINT twice_jobs_pkey DO NOTHING", "ON CONFLICT ON CONSTRAINT twice_jobs_pkey DO NOTHING"},
		// names that only look like tables
		{"SELECT my_twice_jobs, 'twice.jobs', 'twice_x y', E'twice_jobs', \"twice_jobs\" FROM t",
			"SELECT my_twice_jobs, 'twice.jobs', 'twice_x y', E'twice_jobs', \"twice_jobs\" FROM t"},
		{"SELECT 'it''s twice_jobs' -- twice_jobs\nFROM twice_jobs /* twice_jobs */",
			"SELECT 'it''s twice_jobs' -- twice_jobs\nFROM \"S\".twice_jobs /* twice_jobs */"},
		{"SELECT $$twice_jobs$$, $f$ twice_jobs $f$, $1::text FROM twice_jobs",
			`SELECT $$twice_jobs$$, $f$ twice_jobs $f$, $1::text FROM "S".twice_jobs`},
		{"SELECT E'\\'twice_jobs' FROM twice_jobs", `SELECT E'\'twice_jobs' FROM "S".twice_jobs`},
		{"SELECT 1e5, twice_jobs.x FROM twice_jobs", `SELECT 1e5, twice_jobs.x FROM "S".twice_jobs`},
	} {
		got := store.QualifyTables("S", tc.in)
		if got != tc.want {
			t.Errorf("QualifyTables(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if again := store.QualifyTables("S", got); again != got {
			t.Errorf("QualifyTables is not idempotent on %q: %q", got, again)
		}
	}
	// Quotes in a schema name are escaped for both places a name appears.
	got := store.QualifyTables(`we"ird'o`, "SELECT nextval('twice_s') FROM twice_t")
	if want := `SELECT nextval('"we""ird''o".twice_s') FROM "we""ird'o".twice_t`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// SQLAll rewrites every string of a statement set, unexported and nested ones included.
func TestSQLAll(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		s := db.Open(t, nil)
		type nested struct{ del string }
		set := struct {
			get, put string
			n        int
			in       nested
		}{get: "SELECT * FROM twice_a", put: "INSERT INTO twice_b VALUES (1)", n: 7, in: nested{del: "DELETE FROM twice_c"}}
		s.SQLAll(&set)
		for _, q := range []string{set.get, set.put, set.in.del} {
			qualified := strings.Contains(q, `".twice_`)
			if qualified != (db.Dialect == store.Postgres) {
				t.Errorf("%s: %q", db.Dialect, q)
			}
			if q != s.SQL(q) {
				t.Errorf("%q is not fully qualified", q)
			}
		}
		if set.n != 7 {
			t.Error("SQLAll changed a number")
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("SQLAll accepted statements it cannot rewrite")
				}
			}()
			s.SQLAll(&struct{ list []string }{list: []string{"SELECT 1 FROM twice_a"}})
		}()
	})
}

// A statement built with SQL means the same on a connection whose search_path does not
// name the store's schema.
func TestSQLOnAnotherSearchPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t, store.Postgres)
	db := base.InSchema(t, "Mixed_"+base.Schema)
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, widgets(t)).Up(ctx); err != nil {
		t.Fatal(err)
	}
	other := base.Open(t, nil) // search_path: the base schema, which has no widgets
	if _, err := other.Exec(ctx, s.SQL("INSERT INTO twice_test_widgets (name) VALUES ('w')")); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.QueryRow(ctx, "SELECT count(*) FROM twice_test_widgets").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d widgets in %s (%v), want 1", n, db.Schema, err)
	}
	if err := other.QueryRow(ctx, s.SQL("SELECT count(*) FROM twice_test_widgets WHERE to_regclass('twice_test_widgets_id_seq') IS NOT NULL")).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sequence through a qualified regclass: %d, %v", n, err)
	}
}
