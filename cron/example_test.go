package cron_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/jobs"
)

// Parse reads standard expressions, an optional seconds field, descriptors and time zones;
// node.Cron().Add uses it and names the schedule in its error.
func ExampleParse() {
	at := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	for _, expr := range []string{"0 3 * * *", "*/15 * * * * *", "@every 90s", "CRON_TZ=Europe/Berlin 0 3 * * *"} {
		sc, tz, err := cron.Parse(expr, nil)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%-33s %-13s next %s\n", expr, tz, sc.Next(at).UTC().Format(time.DateTime))
	}
	_, _, err := cron.Parse("61 * * * *", nil)
	fmt.Println(err != nil)
	// Output:
	// 0 3 * * *                         UTC           next 2026-03-29 03:00:00
	// */15 * * * * *                    UTC           next 2026-03-28 12:00:15
	// @every 90s                        UTC           next 2026-03-28 12:01:30
	// CRON_TZ=Europe/Berlin 0 3 * * *   Europe/Berlin next 2026-03-29 01:00:00
	// true
}

// Report is the job each tick of the example's schedule runs.
type Report struct{}

func (Report) Kind() string { return "report" }

// A schedule fires each tick once across every instance, as a job of its kind; the worker,
// registered like any other, learns which tick it runs with TickTime.
func ExampleCron_Add() {
	dir, err := os.MkdirTemp("", "twice-cron-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "shop.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	ran := make(chan *jobs.Job[Report], 1)
	err = jobs.Register(node.Jobs(), jobs.WorkFunc[Report](func(ctx context.Context, job *jobs.Job[Report]) error {
		select {
		case ran <- job: // the first tick's job; later ones only complete
		default:
		}
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	if err := node.Cron().Add("every-second", "* * * * * *", Report{}, nil); err != nil {
		log.Fatal(err)
	}

	job := <-ran
	tick, ok := cron.TickTime(job.Row)
	fmt.Println("schedule:", job.Meta["cron"], "tick:", ok, "attempt:", job.Attempt)
	fmt.Println("on the second:", tick.Equal(tick.Truncate(time.Second)), "scheduled at the tick:", job.ScheduledAt.Equal(tick))
	fmt.Println("unique key:", job.UniqueKey == "report|cron|every-second|"+tick.UTC().Format(time.RFC3339Nano))
	// Output:
	// schedule: every-second tick: true attempt: 1
	// on the second: true scheduled at the tick: true
	// unique key: true
}
