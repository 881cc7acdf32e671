package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

type dailyReport struct{ Day string }

func (dailyReport) Kind() string { return "report" }

// adminCLI returns a runner of twice's admin commands against db (its DSN and schema): it
// fails the test unless the command exits with want, and returns what it printed.
func adminCLI(t *testing.T, db testdb.DB) func(want int, args ...string) string {
	env := []string{"TWICE_DSN=" + db.DSN, "TWICE_SERVICE="}
	return func(want int, args ...string) string {
		t.Helper()
		if db.Schema != "" {
			args = append(args, "--schema", db.Schema)
		}
		code, out, stderr := cli(t, env, args...)
		if code != want {
			t.Fatalf("twice %v: exit %d, want %d\n%s%s", args, code, want, out, stderr)
		}
		return out + stderr
	}
}

func TestJobsQueuesCronCommands(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		run := adminCLI(t, db)
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		// No worker is registered: the jobs stay where the commands put them.
		r1, err := n.Jobs().Enqueue(ctx, dailyReport{Day: "mon"}, &jobs.Opts{Tags: []string{"daily"}})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := n.Jobs().Enqueue(ctx, dailyReport{Day: "tue"}, &jobs.Opts{Queue: "slow"})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Cron().Add("nightly-report", "0 3 * * *", dailyReport{Day: "nightly"}, nil); err != nil {
			t.Fatal(err)
		}
		out := run(0, "jobs", "list")
		if !strings.Contains(out, "report") || !strings.Contains(out, "slow") || !strings.Contains(out, "available") {
			t.Errorf("jobs list:\n%s", out)
		}
		var rows []jobs.Row
		if err := json.Unmarshal([]byte(run(0, "jobs", "list", "--json", "--tag", "daily", "--service", "shop")), &rows); err != nil || len(rows) != 1 || rows[0].ID != r1.ID {
			t.Errorf("jobs list --json --tag: %+v %v", rows, err)
		}
		if out := run(0, "jobs", "show", fmt.Sprint(r1.ID)); !strings.Contains(out, `{"Day":`) || !strings.Contains(out, "daily") {
			t.Errorf("jobs show:\n%s", out)
		}
		if out := run(0, "jobs", "cancel", fmt.Sprint(r2.ID)); !strings.Contains(out, "cancelled") {
			t.Errorf("jobs cancel: %s", out)
		}
		if out := run(1, "jobs", "cancel", fmt.Sprint(r2.ID)); !strings.Contains(out, "already finished") {
			t.Errorf("second cancel: %s", out)
		}
		var row jobs.Row
		if err := json.Unmarshal([]byte(run(0, "jobs", "retry", fmt.Sprint(r2.ID), "--json")), &row); err != nil || row.State != jobs.Available {
			t.Errorf("jobs retry --json: %+v %v", row, err)
		}
		if out := run(0, "jobs", "discard", fmt.Sprint(r2.ID), "--reason", "wrong day"); !strings.Contains(out, "discarded") {
			t.Errorf("jobs discard: %s", out)
		}
		if err := json.Unmarshal([]byte(run(0, "jobs", "show", fmt.Sprint(r2.ID), "--json")), &row); err != nil ||
			row.State != jobs.Discarded || row.LastError != "discarded by hand: wrong day" {
			t.Errorf("the job discarded by the CLI: %s, error %q, %v", row.State, row.LastError, err)
		}
		if out := run(1, "jobs", "discard", fmt.Sprint(r2.ID)); !strings.Contains(out, "already finished") {
			t.Errorf("second discard: %s", out)
		}
		if out := run(1, "jobs", "show", "999999"); !strings.Contains(out, "not found") {
			t.Errorf("show of a missing job: %s", out)
		}
		var stats struct{ Queues []jobs.QueueStats }
		if err := json.Unmarshal([]byte(run(0, "jobs", "stats", "--json")), &stats); err != nil || len(stats.Queues) != 2 {
			t.Errorf("jobs stats --json: %+v %v", stats, err)
		}

		run(0, "queues", "pause", "slow")
		if out := run(0, "queues", "list"); !strings.Contains(out, "slow") || !strings.Contains(out, "true") {
			t.Errorf("queues list after pause:\n%s", out)
		}
		run(0, "queues", "resume", "slow")
		if err := json.Unmarshal([]byte(run(0, "queues", "list", "--json")), &stats); err != nil || stats.Queues[1].Paused {
			t.Errorf("queues list --json after resume: %+v %v", stats, err)
		}

		out = run(0, "cron", "list")
		if !strings.Contains(out, "nightly-report") || !strings.Contains(out, "0 3 * * *") || !strings.Contains(out, " 03:00:00") {
			t.Errorf("cron list:\n%s", out)
		}
		var trig struct{ Job int64 }
		if err := json.Unmarshal([]byte(run(0, "cron", "trigger", "nightly-report", "--json")), &trig); err != nil || trig.Job == 0 {
			t.Fatalf("cron trigger --json: %+v %v", trig, err)
		}
		got, err := n.Jobs().Get(ctx, trig.Job)
		if err != nil || got.Kind != "report" || got.Meta["cron"] != "nightly-report" {
			t.Errorf("triggered job: %+v %v", got, err)
		}
		if out := run(1, "cron", "trigger", "nope"); !strings.Contains(out, "not found") {
			t.Errorf("trigger of a missing schedule: %s", out)
		}

		for _, bad := range [][]string{{"jobs"}, {"jobs", "show"}, {"jobs", "show", "abc"}, {"jobs", "list", "--state", "nope"},
			{"jobs", "list", "--limit", "0"}, {"jobs", "frob"}, {"jobs", "discard"}, {"jobs", "show", "1", "--reason", "x"}, {"queues"}, {"queues", "pause"}, {"cron"}, {"cron", "trigger"},
			{"cron", "list", "extra"}} {
			if out := run(2, bad...); !strings.Contains(out, "Usage:") {
				t.Errorf("twice %v: no usage", bad)
			}
		}
	})
}

// A job enqueued to a queue that no instance works must show: `twice queues list` counts
// each queue's live workers and names the queues that have jobs and none.
func TestQueuesListShowsQueuesNobodyWorks(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		env := []string{"TWICE_DSN=" + db.DSN, "TWICE_SERVICE=shop"}
		args := func(a ...string) []string {
			if db.Schema != "" {
				a = append(a, "--schema", db.Schema)
			}
			return a
		}
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		block := make(chan struct{})
		defer close(block)
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[dailyReport](func(ctx context.Context, job *jobs.Job[dailyReport]) error {
			<-block
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Jobs().Enqueue(ctx, dailyReport{Day: "mon"}, &jobs.Opts{Queue: "mail"}); err != nil {
			t.Fatal(err)
		}
		var out string
		testnode.EventuallyNil(t, 20*time.Second, func() error {
			code, stdout, stderr := cli(t, env, args("queues", "list")...)
			if code != 0 {
				t.Fatalf("queues list: exit %d\n%s%s", code, stdout, stderr)
			}
			out = stdout
			if !strings.Contains(out, "default  1") { // the instance has recorded the queue it works
				return fmt.Errorf("the default queue never showed its worker:\n%s", out)
			}
			return nil
		})
		if !strings.Contains(out, "mail     0") || !strings.Contains(out, "queue mail has jobs waiting (1) and no live instance works it") {
			t.Errorf("queues list does not point at the queue nobody works:\n%s", out)
		}
		if strings.Contains(out, "queue default has") {
			t.Errorf("queues list flags a worked queue:\n%s", out)
		}
		var stats struct{ Queues []jobs.QueueStats }
		code, stdout, _ := cli(t, env, args("jobs", "stats", "--json")...)
		if err := json.Unmarshal([]byte(stdout), &stats); code != 0 || err != nil || len(stats.Queues) != 2 ||
			stats.Queues[0].Workers != 1 || stats.Queues[1].Queue != "mail" || stats.Queues[1].Workers != 0 {
			t.Errorf("jobs stats --json: exit %d %+v %v", code, stats, err)
		}
	})
}
