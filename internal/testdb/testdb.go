// Package testdb gives each test its own database: a fresh SQLite file, or a fresh schema on
// the PostgreSQL server named by TWICE_TEST_POSTGRES_URL, dropped when the test ends.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice/store"
)

// EnvPostgres names the PostgreSQL server the PostgreSQL suites run against.
const EnvPostgres = "TWICE_TEST_POSTGRES_URL"

// DB is one test's database. Every store opened with its DSN and Schema shares it, as the
// instances of one service do.
type DB struct {
	Dialect store.Dialect
	DSN     string
	Schema  string // PostgreSQL only
}

// Each runs fn as a subtest per backend: "sqlite" always, "postgres" when
// TWICE_TEST_POSTGRES_URL is set (otherwise it skips with the reason).
func Each(t *testing.T, fn func(t *testing.T, db DB)) {
	t.Helper()
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			fn(t, New(t, d))
		})
	}
}

// New makes a database of dialect d for t and drops it when t ends.
func New(t testing.TB, d store.Dialect) DB {
	t.Helper()
	if d == store.SQLite {
		return DB{Dialect: d, DSN: "sqlite:" + filepath.Join(t.TempDir(), "twice.db")}
	}
	url := PostgresURL(t)
	schema := "t_" + strings.ToLower(sanitize(t.Name())) + "_" + randHex(4)
	if len(schema) > 63 {
		schema = schema[len(schema)-63:]
		schema = "t" + schema[1:]
	}
	createSchema(t, url, schema)
	return DB{Dialect: d, DSN: url, Schema: schema}
}

// InSchema returns db (PostgreSQL) in a new schema named exactly name, quoted as it must
// be (mixed case, dots), dropped when t ends.
func (db DB) InSchema(t testing.TB, name string) DB {
	t.Helper()
	if db.Dialect != store.Postgres {
		t.Fatal("testdb: InSchema needs PostgreSQL")
	}
	createSchema(t, db.DSN, name)
	db.Schema = name
	return db
}

// createSchema creates schema on the server of url and drops it when t ends.
func createSchema(t testing.TB, url, schema string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("testdb: connect %s: %v", store.Redact(url), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("testdb: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("testdb: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("testdb: drop schema %s: %v", schema, err)
		}
	})
}

// PostgresURL returns TWICE_TEST_POSTGRES_URL or skips t.
func PostgresURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(EnvPostgres)
	if url == "" {
		t.Skip(EnvPostgres + " not set: skipping the PostgreSQL suite")
	}
	return url
}

// Open opens a store on db, closed when t ends. It does not migrate.
func (db DB) Open(t testing.TB, opts *store.Options) *store.Store {
	t.Helper()
	o := store.Options{}
	if opts != nil {
		o = *opts
	}
	o.Schema = db.Schema
	s, err := store.Open(context.Background(), db.DSN, &o)
	if err != nil {
		t.Fatalf("testdb: open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Env returns the environment a child process needs to reach db.
func (db DB) Env() []string {
	return []string{"TWICE_DSN=" + db.DSN, "TWICE_SCHEMA=" + db.Schema}
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Logger returns a logger that writes into t's output, shown when t fails or with -v.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// LimitedRole creates a PostgreSQL role that may log in, use and create in db's schema and
// nothing more (not CREATE on the database), at most connLimit connections at once (-1
// for no limit), and returns db with a DSN that logs in as it. The role is dropped when t
// ends.
func (db DB) LimitedRole(t testing.TB, connLimit int) DB {
	t.Helper()
	if db.Dialect != store.Postgres {
		t.Fatal("testdb: LimitedRole needs PostgreSQL")
	}
	role := "r_" + db.Schema
	if len(role) > 63 {
		role = role[:63]
	}
	id := pgx.Identifier{role}.Sanitize()
	adminDSN := db.DSN
	admin := func(queries ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminDSN)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		for _, q := range queries {
			if _, err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}
	if err := admin(fmt.Sprintf("CREATE ROLE %s LOGIN CONNECTION LIMIT %d", id, connLimit),
		"GRANT ALL ON SCHEMA "+pgx.Identifier{db.Schema}.Sanitize()+" TO "+id); err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(func() {
		if err := admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+role+"'",
			"DROP OWNED BY "+id+" CASCADE", "DROP ROLE "+id); err != nil {
			t.Errorf("testdb: drop role: %v", err)
		}
	})
	u, err := url.Parse(db.DSN)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	u.User = url.User(role)
	db.DSN = u.String()
	return db
}
