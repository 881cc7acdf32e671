package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/clusterkey"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/store"
)

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: bench needs a benchmark: failover, events, idle, scale, partitions, realtime, invalidation, config or workflows", errUsage)
	}
	switch args[0] {
	case "failover":
		return benchFailover(ctx, args[1:], stdout, stderr)
	case "events":
		return benchEvents(ctx, args[1:], stdout, stderr)
	case "idle":
		return benchIdle(ctx, args[1:], stdout, stderr)
	case "scale":
		return benchScale(ctx, args[1:], stdout, stderr)
	case "partitions":
		return benchPartitions(ctx, args[1:], stdout, stderr)
	case "realtime":
		return benchRealtime(ctx, args[1:], stdout, stderr)
	case "workflows":
		return benchWorkflows(ctx, args[1:], stdout, stderr)
	case kindInvalidation, kindConfig:
		return benchPropagation(ctx, args[0], args[1:], stdout, stderr)
	default:
		return fmt.Errorf("%w: unknown benchmark %q", errUsage, args[0])
	}
}

// benchEnv is what a benchmark of instance processes starts from: its database (--dsn, or
// a scratch SQLite file), a service of its own so that it never touches real ones, the
// spawner of instance processes, and where progress lines go (stderr when the result is
// JSON on stdout). close removes every row the service left, then closes the store.
type benchEnv struct {
	store    *store.Store
	dsn      string
	service  string
	spawn    instance.Spawner
	progress io.Writer
	close    func()
}

// newBenchEnv opens the database of the benchmark name and names its service.
func newBenchEnv(ctx context.Context, db *dbFlags, name string, asJSON bool, stdout, stderr io.Writer) (*benchEnv, error) {
	s, dsn, cleanup, err := openScratch(ctx, db, "bench")
	if err != nil {
		return nil, err
	}
	spawn, err := instance.Self("__instance")
	if err != nil {
		cleanup()
		return nil, err
	}
	e := &benchEnv{store: s, dsn: dsn, service: "bench-" + name + "-" + randHex(3), spawn: spawn, progress: stdout}
	if asJSON {
		e.progress = stderr
	}
	e.close = func() {
		forgetService(s, e.service, twice.Components()...)
		cleanup()
	}
	return e, nil
}

// busName names the bus a benchmark runs over, for its progress line: url's NATS, or the
// store's own.
// benchBus names a benchmark's bus, and gives its instances a random cluster secret when
// signed, so that they sign every message.
func benchBus(url string, signed bool) (secret []byte, name string) {
	if !signed {
		return nil, busName(url)
	}
	return clusterkey.Random(), busName(url) + " (signed)"
}

func busName(url string) string {
	if url == "" {
		return "the store-native bus"
	}
	return "NATS at " + store.Redact(url)
}

// openScratch opens and migrates the database a benchmark or the demo runs on: --dsn,
// $TWICE_DSN, or a fresh SQLite file in a temporary directory. cleanup closes the store and
// removes the directory.
func openScratch(ctx context.Context, db *dbFlags, name string) (s *store.Store, dsn string, cleanup func(), err error) {
	scratch := db.dsn == "" && os.Getenv(twice.EnvDSN) == ""
	dsn, removeDir := db.resolve(), func() {}
	if scratch {
		dir, err := os.MkdirTemp("", "twice-"+name+"-")
		if err != nil {
			return nil, "", nil, err
		}
		dsn, removeDir = "sqlite:"+filepath.Join(dir, "twice.db"), func() { os.RemoveAll(dir) }
	}
	s, err = store.Open(ctx, dsn, &store.Options{Schema: db.schema})
	if err != nil {
		removeDir()
		return nil, "", nil, err
	}
	cleanup = func() { s.Close(); removeDir() }
	if _, err := store.NewMigrator(s, twice.Components()...).Up(ctx); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return s, dsn, cleanup, nil
}

// forgetService removes every row a finished benchmark or demo left behind for service,
// from every table comps declare.
func forgetService(s *store.Store, service string, comps ...store.Component) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = store.DeleteService(ctx, s, service, comps...)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
