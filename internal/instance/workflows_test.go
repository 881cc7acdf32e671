package instance_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// TestWorkflowsSurviveKills: three instances run 500 step flows (five steps that write to
// the database with DoTx; one flow in five has its fourth step fail on every attempt) while
// one is SIGKILLed every two seconds and restarted. Every workflow ends, completed or, when
// it was to fail, compensated; no completed step ran again after a resume: each has exactly
// one row, committed with its checkpoint (the row's id is the result its history keeps); a
// compensated flow's steps 3, 2, 1 were compensated in that order, each recorded once, and a
// compensation ran again only when the process that ran it before was killed after it began
// (compensations are at least once: the kill may come before its end is stored).
func TestWorkflowsSurviveKills(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		began := time.Now()
		total := envInt(t, "TWICE_CRASH_WORKFLOWS", 500)
		every := envDuration(t, "TWICE_CRASH_KILL_EVERY", 2*time.Second)
		s := db.Open(t, nil)
		if _, err := store.NewMigrator(s, instance.Components()...).Up(ctx); err != nil {
			t.Fatal(err)
		}
		// The test's own engine only starts the flows: its job client is never started, so it
		// runs none.
		d := block.Deps{Store: s, Service: "svc", Instance: "test"}
		jc, err := jobs.New(d, jobs.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer jc.Close(ctx)
		e, err := workflow.New(d, jc, workflow.Config{})
		if err != nil {
			t.Fatal(err)
		}
		flow, err := instance.StepFlow(e, s, "svc", "test", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		for from := 0; from < total; from += 100 {
			err := s.InTx(ctx, func(tx store.Tx) error {
				for i := from; i < min(total, from+100); i++ {
					if err := instance.StartStepFlow(ctx, tx, flow, "svc", fmt.Sprintf("flow-%d", i), instance.StepFlowInput{Fail: i%5 == 4}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%d workflows started at %v", total, time.Since(began).Round(time.Millisecond))

		opts := crashOptions(db)
		opts.Workloads = []instance.Workload{instance.Workflows{Concurrency: 5, Pause: 150 * time.Millisecond}}
		g, stderr := startThree(t, opts)
		defer stderr.dumpOnFailure(t)
		defer g.Stop(10 * time.Second)
		stop := make(chan struct{})
		kills := make(chan kill, 1000)
		go killer(t, g, 3, every, stop, kills)
		killUntil(t, stop, "every workflow ended", func() (string, error) {
			var unfinished int
			err := s.Reader().QueryRow(ctx, "SELECT count(*) FROM twice_workflows WHERE service = 'svc' AND state IN ('running', 'compensating')").Scan(&unfinished)
			if err != nil || unfinished == 0 {
				return "", err
			}
			return fmt.Sprintf("%d of %d workflows running or compensating", unfinished, total), nil
		})
		t.Logf("every workflow ended at %v", time.Since(began).Round(time.Millisecond))
		killedAt := map[int]kill{}
		for k := range kills {
			killedAt[k.pid] = k
		}
		g.Stop(10 * time.Second)

		n, problems, err := instance.CheckStepFlows(ctx, s, e, "svc")
		if err != nil {
			t.Fatal(err)
		}
		if n != total {
			t.Errorf("%d step flows judged, want %d", n, total)
		}
		for i, p := range problems {
			if i == 20 {
				t.Errorf("… %d problems in all", len(problems))
				break
			}
			t.Error(p)
		}

		log, _ := g.Log()
		runs := map[string][]instance.Event{}
		for _, ev := range log {
			if ev.Event == "compensation" {
				runs[ev.Key] = append(runs[ev.Key], ev)
			}
		}
		if want := 3 * (total / 5); len(runs) != want {
			t.Errorf("%d compensations ran, want %d", len(runs), want)
		}
		again := 0
		for key, evs := range runs {
			slices.SortFunc(evs, func(a, b instance.Event) int { return cmp.Compare(a.T, b.T) })
			for _, ev := range evs[:len(evs)-1] {
				again++
				if _, killed := killedAfter(ev, killedAt); !killed {
					t.Errorf("compensation %s ran again, though its run on pid %d was not killed", key, ev.PID)
				}
			}
		}
		var resumed int
		if err := s.Reader().QueryRow(ctx, "SELECT count(*) FROM twice_jobs WHERE service = 'svc' AND kind = 'twice.workflow' AND attempt > 1").Scan(&resumed); err != nil {
			t.Fatal(err)
		}
		if len(killedAt) > 0 && resumed == 0 {
			t.Error("no workflow ran on more than one instance: the kills missed them, and the test showed nothing")
		}
		t.Logf("%d workflows, %d kills, %d resumed after a kill, %d compensations run again after a kill", total, len(killedAt), resumed, again)
	})
}
