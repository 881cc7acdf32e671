package twice_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// logBuffer is a logger whose output a test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// A Name taken from the executable and the SQLite file in the working directory are each
// logged once as a warning naming the value chosen and how to set it; given values, or the
// environment, are not.
func TestRiskyDefaultsWarn(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(twice.EnvDSN, "")
	t.Setenv(twice.EnvService, "")
	ctx := context.Background()

	var logs logBuffer
	n, err := twice.Open(ctx, twice.Config{Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	name := n.Config().Name
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	exe := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	file := filepath.Join(dir, "twice.db")
	out := logs.String()
	for _, want := range []string{
		`level=WARN msg="twice: Name defaults to the executable's name; set Config.Name or $TWICE_SERVICE`,
		"name=" + exe,
		`level=WARN msg="twice: DSN defaults to a SQLite file in the working directory; set Config.DSN or $TWICE_DSN`,
		"dsn=" + store.DefaultDSN + " file=" + file,
	} {
		if strings.Count(out, want) != 1 {
			t.Errorf("want %q once in the log:\n%s", want, out)
		}
	}
	if name != exe {
		t.Errorf("Name %q, want the executable's %q", name, exe)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the default DSN is not %s: %v", file, err)
	}

	// Given, or from the environment: nothing to warn about.
	t.Setenv(twice.EnvService, "shop")
	logs = logBuffer{}
	n, err = twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "given.db"), Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	name = n.Config().Name
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "level=WARN") || name != "shop" {
		t.Errorf("Name %q (want shop from $TWICE_SERVICE); log:\n%s", name, logs.String())
	}
}

// $TWICE_SCHEMA is the default Schema, as it is the CLI's --schema.
func TestSchemaFromEnvironment(t *testing.T) {
	db := testdb.New(t, store.Postgres)
	t.Setenv(twice.EnvSchema, db.Schema)
	ctx := context.Background()
	n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Name: "svc", Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if got := n.Store().Schema(); got != db.Schema {
		t.Errorf("schema %q, want %q from $%s", got, db.Schema, twice.EnvSchema)
	}
}

// With MigrateOff, Open fails on a database without twice's tables and succeeds once they
// are there.
func TestMigrateOff(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		_, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "svc", Migrate: twice.MigrateOff})
		if err == nil {
			t.Fatal("Open with MigrateOff on an empty database succeeded")
		}
		testnode.Open(t, db, "svc", testnode.Fast()) // migrates
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "svc", Migrate: twice.MigrateOff, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		_ = n.Close(ctx)
	})
}

// Open refuses a bad name and timings that cannot work.
func TestBadConfig(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		for _, cfg := range []twice.Config{
			{Name: "has space"},
			{Name: "x", HeartbeatInterval: time.Millisecond},
			{Name: "x", HeartbeatInterval: time.Second, DeadAfter: time.Second},
			{Name: "x", LeaseTTL: time.Millisecond},
			{Name: "x", LeaderPoll: time.Hour},
		} {
			cfg.DSN, cfg.Schema = db.DSN, db.Schema
			if n, err := twice.Open(ctx, cfg); err == nil {
				_ = n.Close(ctx)
				t.Errorf("Open(%+v) succeeded", cfg)
			}
		}
	})
}
