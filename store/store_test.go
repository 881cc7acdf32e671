package store_test

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

//go:embed testdata/comp
var compFS embed.FS

func widgets(t testing.TB) store.Component {
	sub, err := fs.Sub(compFS, "testdata/comp")
	if err != nil {
		t.Fatal(err)
	}
	c, err := store.LoadComponent("widgets", sub)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseDSN(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		dsn, wantErr string
	}{
		{dsn: "sqlite:" + dir + "/x.db"},
		{dsn: "sqlite://" + dir + "/x.db?synchronous=full&busy_timeout=2500"},
		{dsn: "postgres://u:secret@localhost:5432/db?sslmode=disable"},
		{dsn: "postgresql://localhost/db"},
		{dsn: "", wantErr: "want sqlite:PATH"},
		{dsn: "mysql://root:hunter2@localhost/db", wantErr: `unknown scheme "mysql"`},
		{dsn: "host=localhost dbname=db user=u password='se cret'"},
		{dsn: "host=localhost dbname=db password=se cret", wantErr: "a word without '=' after it"},
		{dsn: "host=localhost password='hunter2", wantErr: "without its closing quote"},
		{dsn: "postgres://u:hunter2@x@localhost/db", wantErr: "percent-encode '@'"},
		{dsn: "postgres://u:hunt/er2@localhost/db", wantErr: "percent-encode '@'"},
		{dsn: "postgres://u@localhost/db?password=hunter2&x", wantErr: "exactly one '='"},
		{dsn: "postgres://u:hunter2 x@localhost/db", wantErr: "the password has a bad %-escape or a space"},
		{dsn: "sqlite:" + dir + "/x.db?password=hunter2", wantErr: "takes no password"},
		{dsn: "sqlite:" + dir + "/x.db?%zz", wantErr: "bad %-escape"},
		{dsn: "sqlite::memory:", wantErr: "in-memory"},
		{dsn: "sqlite:", wantErr: "no file path"},
		{dsn: "sqlite:" + dir + "/x.db?synchronous=off", wantErr: "synchronous must be normal or full"},
		{dsn: "sqlite:" + dir + "/x.db?cache=shared", wantErr: `unknown parameter "cache"`},
	} {
		_, err := store.ParseDSN(tc.dsn)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseDSN(%q): %v", tc.dsn, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseDSN(%q) = %v, want error containing %q", tc.dsn, err, tc.wantErr)
		case err != nil && !errors.Is(err, store.ErrBadDSN):
			t.Errorf("ParseDSN(%q) = %v, want ErrBadDSN", tc.dsn, err)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("ParseDSN(%q) error shows the password: %v", tc.dsn, err)
		}
	}
	d, err := store.ParseDSN("sqlite://" + dir + "/x.db?synchronous=full&busy_timeout=2500")
	if err != nil || d.Synchronous != "full" || d.BusyTimeout != 2500*time.Millisecond || d.Path != dir+"/x.db" {
		t.Errorf("parsed %+v, %v", d, err)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secret@h/db":          "postgres://u:xxxxx@h/db",
		"postgres://u@h/db":                 "postgres://u@h/db",
		"postgres://h/db?password=secret&x": "postgres://h/db?password=xxxxx",
		"sqlite:./twice.db":                 "sqlite:./twice.db",
		"postgres://u:se cret@h/db":         "postgres://u:xxxxx@h/db",
		// The cases of the security review (M2).
		"postgres://u:S3cr/et@h:5432/db":        "postgres://u:xxxxx@h:5432/db",
		"postgres://u:S3cr?et@h:5432/db":        "postgres://u:xxxxx@h:5432/db",
		"postgres://u:S3cr#et@h:5432/db":        "postgres://u:xxxxx@h:5432/db",
		`postgres://u:a"b\c@h/db`:               "postgres://u:xxxxx@h/db",
		"postgres://h/db?password=a&password=b": "postgres://h/db?password=xxxxx",
		"postgres://h/db?password=ab&cd#ef":     "postgres://h/db?password=xxxxx",
		"host=h user=u password='a b' dbname=d": "host=h user=u password=xxxxx dbname=d",
		"nats://u:p@h:4222,nats://t0ken@h2":     "nats://xxxxx@h:4222,nats://xxxxx@h2",
	} {
		if got := store.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, err := store.Open(ctx, "postgres://me:hunter2@127.0.0.1:1/db?connect_timeout=2", &store.Options{ConnectTimeout: 3 * time.Second})
	if err == nil {
		t.Fatal("Open of a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "postgres://me:xxxxx@127.0.0.1:1/db") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error should name the DSN with its password masked: %v", err)
	}
}

func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{"sqlite:./twice.db", "sqlite:///tmp/x.db?synchronous=full", "postgres://u:p@h:5432/d?sslmode=disable",
		"postgresql://h/d", "mysql://x", ":", "sqlite:?busy_timeout=-1", "postgres://u:p@[::1", "sqlite:%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		d, err := store.ParseDSN(dsn)
		if err != nil {
			if !errors.Is(err, store.ErrBadDSN) {
				t.Fatalf("error %v is not ErrBadDSN", err)
			}
			return
		}
		if d.Dialect != store.SQLite && d.Dialect != store.Postgres {
			t.Fatalf("dialect %q", d.Dialect)
		}
		_ = d.String()
	})
}

func TestStore(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		comp := widgets(t)

		t.Run("MigrateConcurrently", func(t *testing.T) {
			db := testdb.New(t, db.Dialect)
			var wg sync.WaitGroup
			applied := make([][]store.Step, 10)
			errs := make([]error, 10)
			for i := range 10 {
				wg.Go(func() {
					s := db.Open(t, nil)
					applied[i], errs[i] = store.NewMigrator(s, comp).Up(ctx)
				})
			}
			wg.Wait()
			total := 0
			for i := range 10 {
				if errs[i] != nil {
					t.Fatalf("instance %d: %v", i, errs[i])
				}
				total += len(applied[i])
			}
			if total != 2 {
				t.Fatalf("ten instances applied %d steps in all, want 2 (each once)", total)
			}
			s := db.Open(t, nil)
			var n int
			if err := s.QueryRow(ctx, "SELECT count(*) FROM twice_migrations").Scan(&n); err != nil || n != 2 {
				t.Fatalf("version table has %d rows (%v), want 2", n, err)
			}
		})

		t.Run("UpDownStatus", func(t *testing.T) {
			s := testdb.New(t, db.Dialect).Open(t, nil)
			m := store.NewMigrator(s, comp)
			if err := m.Check(ctx); !errors.Is(err, store.ErrMigrationsPending) {
				t.Fatalf("Check on an empty database = %v, want ErrMigrationsPending", err)
			}
			if _, err := m.Up(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.Check(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Exec(ctx, "INSERT INTO twice_test_widgets (name, color) VALUES ($1, $2)", "a", "red"); err != nil {
				t.Fatal(err)
			}
			down, err := m.Down(ctx, 1)
			if err != nil || len(down) != 1 || down[0].Version != 2 {
				t.Fatalf("Down(1) = %v, %v; want version 2 undone", down, err)
			}
			if _, err := s.Exec(ctx, "INSERT INTO twice_test_widgets (name, color) VALUES ($1, $2)", "b", "red"); err == nil {
				t.Fatal("column color survived its down migration")
			}
			st, err := m.Status(ctx)
			if err != nil || len(st) != 2 || !st[0].Applied || st[1].Applied || st[0].AppliedAt.IsZero() {
				t.Fatalf("Status = %+v, %v", st, err)
			}
			if p, _ := m.Pending(ctx); len(p) != 1 || p[0].Version != 2 {
				t.Fatalf("Pending = %v", p)
			}
			if _, err := m.Down(ctx, 0); err != nil {
				t.Fatal(err)
			}
			if st, _ := m.Status(ctx); st[0].Applied {
				t.Fatal("Down(0) left migrations applied")
			}
		})

		t.Run("Script", func(t *testing.T) {
			s := testdb.New(t, db.Dialect).Open(t, nil)
			script := store.Script(db.Dialect, []store.Component{comp}, nil)
			if db.Dialect == store.SQLite {
				// database/sql runs one statement per Exec on some drivers; run the
				// script the way a user's tool would, in one go.
				if _, err := s.DB().ExecContext(ctx, script); err != nil {
					t.Fatalf("script: %v\n%s", err, script)
				}
			} else if _, err := s.Pool().Exec(ctx, script); err != nil {
				t.Fatalf("script: %v\n%s", err, script)
			}
			if err := store.NewMigrator(s, comp).Check(ctx); err != nil {
				t.Fatalf("after running the script: %v", err)
			}
		})

		t.Run("WrapCallerTx", func(t *testing.T) {
			s := testdb.New(t, db.Dialect).Open(t, nil)
			if _, err := store.NewMigrator(s, comp).Up(ctx); err != nil {
				t.Fatal(err)
			}
			// A caller's database/sql transaction, rolled back: the write goes with it.
			tx, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			q, err := s.Wrap(tx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := q.Exec(ctx, "INSERT INTO twice_test_widgets (name) VALUES ($1)", "rolled-back"); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			if db.Dialect == store.Postgres {
				ptx, err := s.Pool().Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				q, err := s.Wrap(ptx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := q.Exec(ctx, "INSERT INTO twice_test_widgets (name) VALUES ($1)", "pgx"); err != nil {
					t.Fatal(err)
				}
				if err := ptx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var names []string
			rows, err := s.Reader().Query(ctx, "SELECT name FROM twice_test_widgets ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var n string
				if err := rows.Scan(&n); err != nil {
					t.Fatal(err)
				}
				names = append(names, n)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			want := map[store.Dialect]string{store.SQLite: "", store.Postgres: "pgx"}[db.Dialect]
			if strings.Join(names, ",") != want {
				t.Fatalf("rows %v, want %q", names, want)
			}
			if _, err := s.Wrap(42); err == nil {
				t.Fatal("Wrap(42) succeeded")
			}
			if err := s.QueryRow(ctx, "SELECT name FROM twice_test_widgets WHERE id = -1").Scan(new(string)); !errors.Is(err, store.ErrNoRows) {
				t.Fatalf("no row: %v, want ErrNoRows", err)
			}
		})

		t.Run("UniqueViolation", func(t *testing.T) {
			s := testdb.New(t, db.Dialect).Open(t, nil)
			if _, err := store.NewMigrator(s, comp).Up(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Exec(ctx, "INSERT INTO twice_test_widgets (id, name) VALUES (1, 'a')"); err != nil {
				t.Fatal(err)
			}
			_, err := s.Exec(ctx, "INSERT INTO twice_test_widgets (id, name) VALUES (1, 'b')")
			if !store.IsUniqueViolation(err) {
				t.Fatalf("duplicate key error %v not recognised", err)
			}
		})

		t.Run("TimeAndClock", func(t *testing.T) {
			s := testdb.New(t, db.Dialect).Open(t, nil)
			now, err := s.Now(ctx)
			if err != nil || time.Since(now).Abs() > time.Minute {
				t.Fatalf("database time %v (%v) is far from this machine's", now, err)
			}
			var got store.Time
			if err := s.QueryRow(ctx, s.SQL("SELECT {now}"), s.NowArg()).Scan(&got); err != nil || got.Sub(now).Abs() > time.Minute {
				t.Fatalf("{now} = %v, %v", got, err)
			}
			stub := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
			st := db.Open(t, &store.Options{Clock: fixedClock(stub)})
			if err := st.QueryRow(ctx, st.SQL("SELECT {now}"), st.NowArg()).Scan(&got); err != nil || !got.Equal(stub) {
				t.Fatalf("stubbed {now} = %v, %v; want %v", got, err, stub)
			}
			var age store.Micros
			q := st.SQL("SELECT {age {now} + {ms $2}, {now}}")
			if err := st.QueryRow(ctx, q, st.NowArg(), 1500).Scan(&age); err != nil || age.Duration != 1500*time.Millisecond {
				t.Fatalf("Age of a 1500 ms interval = %v, %v", age.Duration, err)
			}
		})
	})
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// Instances started together on a new SQLite file all open it: the first to switch it to
// WAL holds its exclusive lock for a moment, and SQLite does not always wait for that lock
// through the busy handler, so Open must.
func TestSQLiteOpensTogetherOnANewFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for round := range 10 {
		path := t.TempDir() + "/twice.db"
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for i := range errs {
			wg.Go(func() {
				s, err := store.Open(ctx, "sqlite:"+path, nil)
				if err != nil {
					errs[i] = err
					return
				}
				s.Close()
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, instance %d: %v", round, i, err)
			}
		}
	}
}
