package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Component is the schema of one building block: numbered migrations in both dialects, and
// the tables they create. Each building block owns its tables and ships them as a Component;
// the migrator applies them in the order given, each under its own version sequence.
type Component struct {
	Name       string
	Migrations []Migration
	// Tables are every table the migrations create, declared by the block (see [Table]).
	Tables []Table
}

// Migration is one versioned schema change with its undo, in both dialects.
type Migration struct {
	Version int
	Name    string
	Up      map[Dialect]string
	Down    map[Dialect]string
}

var migrationFile = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.(up|down)\.sql$`)

// LoadComponent reads a component's migrations from fsys, laid out as
//
//	postgres/0001_members.up.sql   postgres/0001_members.down.sql
//	sqlite/0001_members.up.sql     sqlite/0001_members.down.sql
//
// Every version needs an up and a down file in both dialects. If fsys has a "migrations"
// directory (as a package's `//go:embed migrations` does), the layout is looked for there.
// tables declares every table the migrations create.
func LoadComponent(name string, fsys fs.FS, tables ...Table) (Component, error) {
	c := Component{Name: name, Tables: tables}
	if err := c.checkTables(); err != nil {
		return c, err
	}
	if st, err := fs.Stat(fsys, "migrations"); err == nil && st.IsDir() {
		sub, err := fs.Sub(fsys, "migrations")
		if err != nil {
			return c, err
		}
		fsys = sub
	}
	byVersion := map[int]*Migration{}
	for _, d := range []Dialect{Postgres, SQLite} {
		entries, err := fs.ReadDir(fsys, string(d))
		if err != nil {
			return c, fmt.Errorf("store: component %s: %w", name, err)
		}
		for _, e := range entries {
			m := migrationFile.FindStringSubmatch(e.Name())
			if m == nil {
				return c, fmt.Errorf("store: component %s: %s/%s is not NNNN_name.up.sql or .down.sql", name, d, e.Name())
			}
			v, _ := strconv.Atoi(m[1])
			body, err := fs.ReadFile(fsys, path.Join(string(d), e.Name()))
			if err != nil {
				return c, err
			}
			mig := byVersion[v]
			if mig == nil {
				mig = &Migration{Version: v, Name: m[2], Up: map[Dialect]string{}, Down: map[Dialect]string{}}
				byVersion[v] = mig
			}
			if mig.Name != m[2] {
				return c, fmt.Errorf("store: component %s: version %d is named both %s and %s", name, v, mig.Name, m[2])
			}
			if m[3] == "up" {
				mig.Up[d] = string(body)
			} else {
				mig.Down[d] = string(body)
			}
		}
	}
	for v, mig := range byVersion {
		for _, d := range []Dialect{Postgres, SQLite} {
			if mig.Up[d] == "" || mig.Down[d] == "" {
				return c, fmt.Errorf("store: component %s: version %d lacks its %s up or down file", name, v, d)
			}
		}
		c.Migrations = append(c.Migrations, *mig)
	}
	slices.SortFunc(c.Migrations, func(a, b Migration) int { return a.Version - b.Version })
	for i, mig := range c.Migrations {
		if mig.Version != i+1 {
			return c, fmt.Errorf("store: component %s: versions must run 1, 2, 3…; found %d at position %d", name, mig.Version, i+1)
		}
	}
	return c, nil
}

// MustLoadComponent is [LoadComponent] for embedded files, which cannot be wrong at run time
// without being wrong in every test.
func MustLoadComponent(name string, fsys fs.FS, tables ...Table) Component {
	c, err := LoadComponent(name, fsys, tables...)
	if err != nil {
		panic(err)
	}
	return c
}

// ErrMigrationsPending is returned by [Migrator.Check] when the schema is behind the code.
var ErrMigrationsPending = errors.New("store: migrations pending")

// Step is one migration of one component, as applied or as pending.
type Step struct {
	Component string    `json:"component"`
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Applied   bool      `json:"applied"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

func (s Step) String() string { return fmt.Sprintf("%s %04d_%s", s.Component, s.Version, s.Name) }

// Migrator applies components' migrations. Every change runs in one transaction under a
// migration lock (an advisory lock on PostgreSQL, the write lock on SQLite), so any number of
// instances starting at once migrate exactly once.
type Migrator struct {
	s     *Store
	comps []Component
}

// NewMigrator returns a migrator for comps, applied in that order.
func NewMigrator(s *Store, comps ...Component) *Migrator {
	return &Migrator{s: s, comps: comps}
}

const versionTablePG = `CREATE TABLE IF NOT EXISTS twice_migrations (
	component  text        NOT NULL,
	version    integer     NOT NULL,
	name       text        NOT NULL,
	seq        bigint      NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (component, version)
)`

const versionTableSQLite = `CREATE TABLE IF NOT EXISTS twice_migrations (
	component  TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	name       TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	applied_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER)),
	PRIMARY KEY (component, version)
)`

func versionTable(d Dialect) string {
	if d == SQLite {
		return versionTableSQLite
	}
	return versionTablePG
}

// lock takes the migration lock inside tx and makes sure the version table exists.
func (m *Migrator) lock(ctx context.Context, tx Tx) error {
	if m.s.Dialect() == Postgres {
		// The lock is per schema, so tests and services in other schemas never wait on it.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('twice.migrate'), hashtext($1))", m.s.schema); err != nil {
			return err
		}
		// CREATE SCHEMA IF NOT EXISTS needs the database's CREATE privilege even when the
		// schema exists: a role that may only use its schema must still start.
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", m.s.schema).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{m.s.schema}.Sanitize()); err != nil {
				return err
			}
		}
	}
	// SQLite: the transaction began IMMEDIATE and already holds the only write lock.
	_, err := tx.Exec(ctx, m.s.SQL(versionTable(m.s.Dialect())))
	return err
}

type appliedRow struct {
	seq int64
	at  time.Time
}

func (m *Migrator) applied(ctx context.Context, q Querier) (map[string]appliedRow, error) {
	rows, err := q.Query(ctx, m.s.SQL("SELECT component, version, seq, applied_at FROM twice_migrations"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]appliedRow{}
	for rows.Next() {
		var comp string
		var v int
		var r appliedRow
		var at Time
		if err := rows.Scan(&comp, &v, &r.seq, &at); err != nil {
			return nil, err
		}
		r.at = at.Time
		out[comp+"/"+strconv.Itoa(v)] = r
	}
	return out, rows.Err()
}

// Up applies every pending migration and returns what it applied.
func (m *Migrator) Up(ctx context.Context) ([]Step, error) {
	var done []Step
	err := m.s.InTx(ctx, func(tx Tx) error {
		done = nil
		if err := m.lock(ctx, tx); err != nil {
			return err
		}
		have, err := m.applied(ctx, tx)
		if err != nil {
			return err
		}
		var seq int64
		for _, r := range have {
			seq = max(seq, r.seq)
		}
		for _, c := range m.comps {
			for _, mig := range c.Migrations {
				if _, ok := have[c.Name+"/"+strconv.Itoa(mig.Version)]; ok {
					continue
				}
				step := Step{Component: c.Name, Version: mig.Version, Name: mig.Name, Applied: true}
				if _, err := tx.Exec(ctx, mig.Up[m.s.Dialect()]); err != nil {
					return fmt.Errorf("store: migrate up %s: %w", step, err)
				}
				seq++
				if _, err := tx.Exec(ctx, m.s.SQL("INSERT INTO twice_migrations (component, version, name, seq) VALUES ($1, $2, $3, $4)"),
					c.Name, mig.Version, mig.Name, seq); err != nil {
					return fmt.Errorf("store: migrate up %s: %w", step, err)
				}
				done = append(done, step)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return done, nil
}

// Down undoes the last n applied migrations, newest first, whatever component they belong
// to. n <= 0 undoes all of them.
func (m *Migrator) Down(ctx context.Context, n int) ([]Step, error) {
	var done []Step
	err := m.s.InTx(ctx, func(tx Tx) error {
		done = nil
		if err := m.lock(ctx, tx); err != nil {
			return err
		}
		have, err := m.applied(ctx, tx)
		if err != nil {
			return err
		}
		type undo struct {
			step Step
			sql  string
			seq  int64
		}
		var todo []undo
		for _, c := range m.comps {
			for _, mig := range c.Migrations {
				if r, ok := have[c.Name+"/"+strconv.Itoa(mig.Version)]; ok {
					todo = append(todo, undo{Step{Component: c.Name, Version: mig.Version, Name: mig.Name}, mig.Down[m.s.Dialect()], r.seq})
				}
			}
		}
		slices.SortFunc(todo, func(a, b undo) int { return int(b.seq - a.seq) })
		if n > 0 && len(todo) > n {
			todo = todo[:n]
		}
		for _, u := range todo {
			if _, err := tx.Exec(ctx, u.sql); err != nil {
				return fmt.Errorf("store: migrate down %s: %w", u.step, err)
			}
			if _, err := tx.Exec(ctx, m.s.SQL("DELETE FROM twice_migrations WHERE component = $1 AND version = $2"), u.step.Component, u.step.Version); err != nil {
				return err
			}
			done = append(done, u.step)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return done, nil
}

// Status lists every migration the code knows, applied or not, in order.
func (m *Migrator) Status(ctx context.Context) ([]Step, error) {
	have, err := m.appliedIfAny(ctx)
	if err != nil {
		return nil, err
	}
	var out []Step
	for _, c := range m.comps {
		for _, mig := range c.Migrations {
			st := Step{Component: c.Name, Version: mig.Version, Name: mig.Name}
			if r, ok := have[c.Name+"/"+strconv.Itoa(mig.Version)]; ok {
				st.Applied, st.AppliedAt = true, r.at
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// appliedIfAny reads the version table, treating a missing one as empty.
func (m *Migrator) appliedIfAny(ctx context.Context) (map[string]appliedRow, error) {
	var exists bool
	var err error
	if m.s.Dialect() == Postgres {
		err = m.s.Reader().QueryRow(ctx, m.s.SQL("SELECT to_regclass(quote_ident($1) || '.twice_migrations') IS NOT NULL"), m.s.schema).Scan(&exists)
	} else {
		err = m.s.Reader().QueryRow(ctx, m.s.SQL("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'twice_migrations'")).Scan(&exists)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", m.s, err)
	}
	if !exists {
		return map[string]appliedRow{}, nil
	}
	return m.applied(ctx, m.s.Reader())
}

// Check returns [ErrMigrationsPending], naming the first pending step, when the schema is
// behind the code.
func (m *Migrator) Check(ctx context.Context) error {
	steps, err := m.Status(ctx)
	if err != nil {
		return err
	}
	var pending []string
	for _, st := range steps {
		if !st.Applied {
			pending = append(pending, st.String())
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("%w in %s: %s (run `twice migrate up`, or apply `twice migrate sql` with your own tool)",
			ErrMigrationsPending, m.s, strings.Join(pending, ", "))
	}
	return nil
}

// Script returns the SQL of the given steps (all migrations when steps is nil) as one script
// in dialect d, recording each in the version table, for teams that run their own migration
// tool. The result is what [Migrator.Up] would do.
func Script(d Dialect, comps []Component, steps []Step) string {
	want := map[string]bool{}
	for _, st := range steps {
		want[st.Component+"/"+strconv.Itoa(st.Version)] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- twice schema migrations for %s.\n-- Apply in one transaction; each step records itself in twice_migrations.\n\n", d)
	if d == Postgres {
		b.WriteString("BEGIN;\n\n")
	} else {
		b.WriteString("BEGIN IMMEDIATE;\n\n")
	}
	b.WriteString(versionTable(d) + ";\n")
	for _, c := range comps {
		for _, mig := range c.Migrations {
			if steps != nil && !want[c.Name+"/"+strconv.Itoa(mig.Version)] {
				continue
			}
			fmt.Fprintf(&b, "\n-- %s %04d_%s\n%s\n", c.Name, mig.Version, mig.Name, strings.TrimSpace(mig.Up[d]))
			fmt.Fprintf(&b, "INSERT INTO twice_migrations (component, version, name, seq)\n"+
				"  SELECT '%s', %d, '%s', coalesce(max(seq), 0) + 1 FROM twice_migrations;\n", c.Name, mig.Version, mig.Name)
		}
	}
	b.WriteString("\nCOMMIT;\n")
	return b.String()
}

// Pending returns the steps not yet applied.
func (m *Migrator) Pending(ctx context.Context) ([]Step, error) {
	steps, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(steps, func(s Step) bool { return s.Applied }), nil
}
