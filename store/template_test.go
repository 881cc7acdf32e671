package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

func TestTemplateExpansion(t *testing.T) {
	t.Parallel()
	s := testdb.New(t, store.SQLite).Open(t, nil)
	for _, c := range []struct{ in, want string }{
		{"SELECT {now}", "SELECT coalesce($1, " + store.SQLiteNow + ")"},
		{"SELECT {now $3}", "SELECT coalesce($3, " + store.SQLiteNow + ")"},
		{"SELECT {clock}", "SELECT " + store.SQLiteNow},
		{"SELECT {now} + {ms $5::bigint}", "SELECT coalesce($1, " + store.SQLiteNow + ") + $5 * 1000"},
		{"SELECT {ms dead_after_ms + $3::bigint}, {ms m.ttl_ms}, {ms (a + b)::int}, {ms -1}", "SELECT (dead_after_ms + $3) * 1000, m.ttl_ms * 1000, (a + b) * 1000, (-1) * 1000"},
		{"SELECT {age expires_at, {now}}, {age a + 1, f(b) - 2}", "SELECT expires_at - coalesce($1, " + store.SQLiteNow + "), (a + 1) - (f(b) - 2)"},
		{"WHERE id {in $4 bigint}", "WHERE id IN (SELECT value FROM json_each($4))"},
		{"WHERE name {notin $2 text}", "WHERE name NOT IN (SELECT value FROM json_each($2))"},
		{"SELECT 1{pg  FOR UPDATE SKIP LOCKED}", "SELECT 1"},
		{"SELECT 1{sqlite  LIMIT 1}", "SELECT 1 LIMIT 1"},
		{"{pg\nSELECT 1}{sqlite\nSELECT 2\n}", "\nSELECT 2\n"},
		{"SELECT 1{sqlite\nLIMIT 1}", "SELECT 1\nLIMIT 1"},
		{"SELECT '{now}'::text, '::x', \"a::b\" -- {now}::int", "SELECT '{now}', '::x', \"a::b\" -- {now}::int"},
		{"SELECT x::bigint[], y::text", "SELECT x, y"},
	} {
		if got := s.SQL(c.in); got != c.want {
			t.Errorf("SQLite: %q expands to\n%q, want\n%q", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"SELECT {nope}", "SELECT {in $1}", "SELECT {age x}", "SELECT {now"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%q expanded without complaint", bad)
				}
			}()
			s.SQL(bad)
		}()
	}
}

func TestTemplatePostgres(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	s := db.Open(t, nil)
	q := s.SQL("SELECT {now} + {ms $2::bigint}, {ms ttl_ms + 1}, {age expires_at, {now}} FROM twice_x WHERE id {in $3 bigint}{pg  FOR UPDATE}{sqlite  LIMIT 1}")
	want := `SELECT coalesce($1::timestamptz, now()) + $2::bigint * interval '1 millisecond', (ttl_ms + 1) * interval '1 millisecond', ` +
		`(extract(epoch from expires_at - coalesce($1::timestamptz, now())) * 1000000)::bigint FROM "` + db.Schema +
		`".twice_x WHERE id = ANY($3::bigint[]) FOR UPDATE`
	if q != want {
		t.Errorf("PostgreSQL expansion\n%q, want\n%q", q, want)
	}
	if got := s.SQL(q); got != q {
		t.Errorf("expanding twice changed the statement:\n%q", got)
	}
}

// The markers mean the same on both databases: run them.
func TestTemplateRuns(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := db.Open(t, nil)
		stub := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		var later store.Time
		var age store.Micros
		var in, notin int
		err := s.Reader().QueryRow(ctx, s.SQL(`
SELECT {now} + {ms $2::bigint}, {age {now} + {ms $2::bigint}, {now}},
       (SELECT count(*) FROM (SELECT 3 AS id UNION ALL SELECT 4 UNION ALL SELECT 5) t WHERE id {in $3 bigint}),
       (SELECT count(*) FROM (SELECT 'a' AS n UNION ALL SELECT 'b') t WHERE n {notin $4 text})`),
			s.TimeArg(stub), int64(1500), s.List([]int64{3, 5, 9}), s.List([]string{"a"})).Scan(&later, &age, &in, &notin)
		if err != nil {
			t.Fatal(err)
		}
		if !later.Time.Equal(stub.Add(1500*time.Millisecond)) || age.Duration != 1500*time.Millisecond || in != 2 || notin != 1 {
			t.Errorf("got %v, age %v, in %d, notin %d; want %v, 1.5s, 2, 1", later.Time, age.Duration, in, notin, stub.Add(1500*time.Millisecond))
		}
		var clock store.Time
		if err := s.Reader().QueryRow(ctx, s.SQL("SELECT {clock}")).Scan(&clock); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(clock.Time); d < -time.Minute || d > time.Minute {
			t.Errorf("{clock} is %v, %v from this machine's clock", clock.Time, d)
		}
		if !strings.Contains(s.SQL("{now}"), "$1") {
			t.Error("{now} does not read $1")
		}
	})
}
