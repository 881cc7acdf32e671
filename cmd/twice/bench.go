package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/store"
)

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: bench needs a benchmark: failover, events, invalidation or config", errUsage)
	}
	switch args[0] {
	case "failover":
		return benchFailover(ctx, args[1:], stdout, stderr)
	case "events":
		return benchEvents(ctx, args[1:], stdout, stderr)
	case instance.KindInvalidation, instance.KindConfig:
		return benchPropagation(ctx, args[0], args[1:], stdout, stderr)
	default:
		return fmt.Errorf("%w: unknown benchmark %q", errUsage, args[0])
	}
}

func benchFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	kills := fs.Int("kills", 10, "how many times to stop the leader")
	graceful := fs.Bool("graceful", false, "stop the leader with SIGTERM (a drain) instead of SIGKILL")
	instances := fs.Int("instances", 3, "instances to run")
	ttl := fs.Duration("lease-ttl", 0, "leader lease TTL (default: the node default, 2s)")
	poll := fs.Duration("leader-poll", 0, "leader poll interval (default: the node default, 100ms)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *kills < 1 || *kills > 10000 {
		return fmt.Errorf("%w: bench failover: --kills must be 1 to 10000", errUsage)
	}
	if *instances < 2 || *instances > 50 {
		return fmt.Errorf("%w: bench failover: --instances must be 2 to 50", errUsage)
	}
	s, dsn, cleanup, err := openScratch(ctx, &db, "bench")
	if err != nil {
		return err
	}
	defer cleanup()
	// A service of its own, removed afterwards, so the benchmark never touches real ones.
	service := "bench-failover-" + randHex(3)
	defer forgetService(s, service)

	spawn, err := instance.Self("__instance")
	if err != nil {
		return err
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	fmt.Fprintf(progress, "bench failover: %d instances of %s on %s, %d × %s to the leader\n",
		*instances, service, s, *kills, map[bool]string{false: "SIGKILL", true: "SIGTERM"}[*graceful])
	res, err := instance.BenchFailover(ctx, spawn,
		instance.Options{DSN: dsn, Schema: db.schema, Service: service, LeaseTTL: *ttl, LeaderPoll: *poll},
		instance.FailoverParams{Kills: *kills, Graceful: *graceful, Instances: *instances, Progress: progress})
	if err != nil {
		return err
	}
	res.Store = string(s.Dialect())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "failover after %s on %s: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills (lease TTL %.0f ms, leader poll %.0f ms)\n",
		res.Signal, res.Store, res.P50MS, res.P99MS, res.MaxMS, res.Kills, res.LeaseTTLMS, res.PollMS)
	return nil
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
// from every table twice's blocks declare.
func forgetService(s *store.Store, service string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = store.DeleteService(ctx, s, service, twice.Components()...)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
