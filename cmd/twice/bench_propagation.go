package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/store"
)

// benchPropagation runs `twice bench invalidation` and `twice bench config`: how long a
// change committed on one instance takes to reach every instance.
func benchPropagation(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench "+kind, flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	count := fs.Int("count", 200, "how many changes to time, one at a time")
	instances := fs.Int("instances", 3, "instances to run, the writer included")
	interval := fs.Duration("interval", 10*time.Millisecond, "pause between two timed changes")
	burst := 0
	if kind == instance.KindInvalidation {
		fs.IntVar(&burst, "burst", 2000, "invalidations sent back to back afterwards, for throughput (0: none)")
	}
	busURL := fs.String("bus", "", "signal over NATS (nats://host:port) instead of the store-native bus")
	signed := fs.Bool("signed", false, "sign every bus message with a random cluster secret (Config.ClusterSecret)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *count < 1 || *count > 100000:
		return fmt.Errorf("%w: bench %s: --count must be 1 to 100000", errUsage, kind)
	case *instances < 2 || *instances > 50:
		return fmt.Errorf("%w: bench %s: --instances must be 2 to 50", errUsage, kind)
	case *interval < 0 || *interval > time.Minute:
		return fmt.Errorf("%w: bench %s: --interval must be 0 to 1m", errUsage, kind)
	case burst < 0 || burst > 1000000:
		return fmt.Errorf("%w: bench %s: --burst must be 0 to 1000000", errUsage, kind)
	}
	s, dsn, cleanup, err := openScratch(ctx, &db, "bench")
	if err != nil {
		return err
	}
	defer cleanup()
	service := "bench-" + kind + "-" + randHex(3)
	defer forgetService(s, service)
	spawn, err := instance.Self("__instance")
	if err != nil {
		return err
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	busName := "the store-native bus"
	if *busURL != "" {
		busName = "NATS at " + store.Redact(*busURL)
	}
	var secret []byte
	if *signed {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		busName += ", signed"
	}
	fmt.Fprintf(progress, "bench %s: %d instances of %s on %s over %s, %d changes\n", kind, *instances, service, s, busName, *count)
	res, err := instance.BenchPropagation(ctx, spawn, instance.Options{DSN: dsn, Schema: db.schema, Service: service, Bus: *busURL, ClusterSecret: secret},
		instance.PropagationParams{Kind: kind, Instances: *instances, Count: *count, Interval: *interval, Burst: burst, Progress: progress})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	if res.Signed {
		res.Bus += " (signed)"
	}
	fmt.Fprintf(stdout, "%s on %s over the %s bus, %d instances, %d changes: reaches every instance p50 %.2f ms, p99 %.2f ms, max %.2f ms; each delivery p50 %.2f ms, p99 %.2f ms\n",
		kind, res.Store, res.Bus, res.Instances, res.Count, res.EveryP50MS, res.EveryP99MS, res.EveryMaxMS, res.EachP50MS, res.EachP99MS)
	if res.Burst > 0 {
		fmt.Fprintf(stdout, "burst: %d invalidations from 4 writers reached every instance at %.0f/s\n", res.Burst, res.BurstPerSec)
	}
	if res.Lost > 0 {
		fmt.Fprintf(stdout, "the bus reported %d losses (each flushed a cache)\n", res.Lost)
	}
	return nil
}
