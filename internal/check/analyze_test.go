package check

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/rtclient"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// analyserCase runs one analyser on a planted history: with plant, one with exactly one
// violation of its invariant; without, one with none. s is a migrated store with the
// checker's tables; service is fresh for each call.
type analyserCase func(t *testing.T, s *store.Store, service string, plant bool) Invariant

// analyserCases has a case for every invariant a run judges, keyed by its name (for the
// leadership invariant, its name without the TTL). TestRun fails on an invariant that has
// none here.
func analyserCases() map[string]analyserCase {
	return map[string]analyserCase{
		invLeaderOrder: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			writes := []logWrite{{"leader", 1, 10, "a"}, {"leader", 2, 20, "b"}, {"leader", 2, 21, "b"}}
			if plant {
				writes = append(writes, logWrite{"leader", 1, 11, "a"}) // a stale holder after the newer one
			}
			return tokenOrder(invLeaderOrder, writes, "leader", nil)
		},
		invLockOrder: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			// Leader writes out of order do not count for the locks.
			writes := []logWrite{{"lock", 1, 1, "a"}, {"leader", 5, 2, "a"}, {"lock", 2, 3, "b"}, {"leader", 4, 4, "b"}}
			if plant {
				writes = append(writes, logWrite{"lock", 1, 5, "a"})
			}
			return tokenOrder(invLockOrder, writes, "lock", nil)
		},
		invPartitions: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			// Each partition has its own tokens: partition 1's token 1 after partition 0's
			// token 3 is in order, and so are the other kinds' writes.
			writes := []logWrite{{"partition", 2, 0, "a"}, {"partition", 3, 0, "b"}, {"partition", 1, 1, "a"}, {"lock", 1, 9, "c"}, {"partition", 2, 1, "b"}}
			if plant {
				writes = append(writes, logWrite{"partition", 2, 0, "a"}) // partition 0's old owner after its successor
			}
			return partitionOrder(writes)
		},
		invRealtime: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			// Explicit losses are no violation.
			audits := []rtclient.Audit{{Messages: 10, Lost: 1}, {Messages: 12}}
			if plant {
				audits[1].Gaps = 1
			}
			inv := Invariant{Name: invRealtime}
			for i, a := range audits {
				judgeRealtime(&inv, i, a)
			}
			return inv
		},
		invRefused: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			refused := []instance.Event{op("op", 0, instance.Op{Kind: "write", Value: 11, Token: 1, Result: "fenced"})}
			writes := []logWrite{{"leader", 1, 10, "a"}, {"leader", 2, 20, "b"}}
			if plant {
				writes = append(writes, logWrite{"leader", 1, 11, "a"})
			}
			return refusedLeftNoTrace(refused, writes)
		},
		invLinearizable: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			// A newer holder writes 20; then the old holder's write of 11 succeeds (planted)
			// or is refused.
			result := "fenced"
			log := []logWrite{{"leader", 2, 20, "b"}}
			final := int64(20)
			if plant {
				result, final = "ok", 11
				log = append(log, logWrite{"leader", 1, 11, "a"})
			}
			h := []instance.Event{
				op("op", 0, instance.Op{Kind: "write", Value: 20, Token: 2, Call: 10, Return: 20, Result: "ok"}),
				op("op", 1, instance.Op{Kind: "write", Value: 11, Token: 1, Call: 30, Return: 40, Result: result}),
			}
			return linearizable(h, log, instance.Op{Kind: "read", Value: final, Call: 50, Return: 60})
		},
		invOneLeader: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			start := time.Now().Add(-time.Hour)
			demoted := start.Add(500 * time.Millisecond) // before b is elected
			if plant {
				demoted = start.Add(3 * time.Second) // 2 s after b is elected
			}
			terms := []instance.Event{
				{Event: "elected", Proc: 0, ID: "a", Token: 1, T: start.UnixNano()},
				{Event: "elected", Proc: 1, ID: "b", Token: 2, T: start.Add(time.Second).UnixNano()},
				{Event: "demoted", Proc: 0, ID: "a", Token: 1, T: demoted.UnixNano()},
			}
			return oneBeliever(terms, time.Second)
		},
		invEventsEO: func(t *testing.T, s *store.Store, service string, plant bool) Invariant {
			ids := publishCheckEvents(t, s, service, 3)
			handle(t, s, service, instance.CheckGroupShared, ids...)
			handle(t, s, service, instance.CheckGroupEO, ids...)
			if plant {
				handle(t, s, service, instance.CheckGroupEO, ids[1]) // handled twice
			}
			eo, shared, err := eventInvariants(context.Background(), s, service)
			if err != nil {
				t.Fatal(err)
			}
			if shared.Violations != 0 {
				t.Errorf("the shared group judged wrong: %+v", shared)
			}
			return eo
		},
		invEventsShared: func(t *testing.T, s *store.Store, service string, plant bool) Invariant {
			ids := publishCheckEvents(t, s, service, 3)
			handle(t, s, service, instance.CheckGroupEO, ids...)
			if plant {
				ids = append(ids[:1], ids[2:]...) // the second event skipped
			}
			handle(t, s, service, instance.CheckGroupShared, ids...)
			eo, shared, err := eventInvariants(context.Background(), s, service)
			if err != nil {
				t.Fatal(err)
			}
			if eo.Violations != 0 {
				t.Errorf("the exactly-once group judged wrong: %+v", eo)
			}
			return shared
		},
		invJobsLost: func(t *testing.T, s *store.Store, service string, plant bool) Invariant {
			start := time.Now()
			done := checkJob(t, s, service, jobs.Completed)
			runJob(t, s, service, done, 1, "a", start)
			if plant {
				checkJob(t, s, service, jobs.Available) // never ran
			}
			lost, twice, err := jobInvariants(context.Background(), s, service, nil)
			if err != nil {
				t.Fatal(err)
			}
			if twice.Violations != 0 {
				t.Errorf("runs judged wrong: %+v", twice)
			}
			return lost
		},
		invJobsTwice: func(t *testing.T, s *store.Store, service string, plant bool) Invariant {
			start := time.Now()
			id := checkJob(t, s, service, jobs.Completed)
			runJob(t, s, service, id, 1, "a", start)
			runJob(t, s, service, id, 2, "b", start.Add(5*time.Second))
			// The second run is allowed only if a was hit between claiming the job and it.
			faults := []faultRec{{kind: FaultKill, instance: "a", start: start.Add(time.Second), end: start.Add(2 * time.Second)}}
			if plant {
				faults = []faultRec{{kind: FaultKill, instance: "b", start: start.Add(time.Second), end: start.Add(2 * time.Second)}}
			}
			lost, twice, err := jobInvariants(context.Background(), s, service, faults)
			if err != nil {
				t.Fatal(err)
			}
			if lost.Violations != 0 {
				t.Errorf("completion judged wrong: %+v", lost)
			}
			return twice
		},
		invCron: func(t *testing.T, s *store.Store, service string, plant bool) Invariant {
			first := time.Now().Truncate(time.Second).Add(-time.Minute)
			for i := range 4 {
				if plant && i == 2 {
					continue // a tick that never ran
				}
				id := checkJob(t, s, service, jobs.Completed)
				runTick(t, s, service, first.Add(time.Duration(i)*time.Second), id, "a")
			}
			inv, err := tickInvariant(context.Background(), s, service, nil)
			if err != nil {
				t.Fatal(err)
			}
			return inv
		},
		invWorkflows: func(t *testing.T, s *store.Store, service string, plant bool) Invariant {
			e := runFlows(t, s, service)
			if plant {
				ranAgain(t, s, service, "flow-0", 2)
			}
			inv, err := workflowInvariant(context.Background(), s, e, service)
			if err != nil {
				t.Fatal(err)
			}
			return inv
		},
		invRecovery: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			return recovery(!plant)
		},
		invSessions: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			acked := map[string]int64{"k0": 6, "k1": 3}
			tried := map[string]int64{"k0": 7, "k1": 3}
			got := map[string]int64{"k0": 7, "k1": 3} // k0's last write took effect, its answer was lost
			if plant {
				got["k0"] = 5 // a confirmed update lost
			}
			return judgeSessions(got, acked, tried, 20)
		},
		invIdempotency: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			paid := map[string]bool{"pay-0": true, "pay-1": true}
			counts := map[string]int{"pay-0": 1, "pay-1": 1, "pay-2": 1} // pay-2 in flight, done once
			if plant {
				counts["pay-1"] = 2
			}
			return judgeIdempotency(paid, "pay-2", counts)
		},
		invConverge: func(t *testing.T, _ *store.Store, _ string, plant bool) Invariant {
			truth := func(context.Context) (int64, int64, error) { return 5, 12, nil }
			view := func(_ context.Context, addr string) (instance.Converged, error) {
				if plant && addr == "b" {
					return instance.Converged{Setting: 5, Cache: 4}, nil // a stale cache
				}
				return instance.Converged{Setting: 5, Cache: 5}, nil
			}
			inv, err := judgeConverge(context.Background(), []string{"a", "b"}, truth, view, 50*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			return inv
		},
	}
}

// Every analyser reports a planted violation, exactly one, and nothing on a sound history.
func TestAnalysersCatchTheirViolation(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		s := migrated(t, db)
		n := 0
		for name, check := range analyserCases() {
			t.Run(name, func(t *testing.T) {
				for _, plant := range []bool{true, false} {
					n++
					service := "svc-" + strconv.Itoa(n)
					inv := check(t, s, service, plant)
					want := 0
					if plant {
						want = 1
					}
					if !strings.HasPrefix(inv.Name, name) || inv.Violations != want || (want == 1) != (len(inv.Details) > 0) {
						t.Errorf("planted %v: %+v; want %d violation of %q", plant, inv, want, name)
					}
					if inv.Operations == 0 {
						t.Errorf("planted %v: no operations judged: %+v", plant, inv)
					}
				}
			})
		}
	})
}

// The workflow invariant reports a step flow that did not end, and a completed step that
// ran twice, each as one violation naming it; the flows that ran soundly beside them pass.
func TestWorkflowInvariant(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := migrated(t, db)
		for _, c := range []struct {
			name, want string
			plant      func(t *testing.T, service string, e *workflow.Engine)
		}{
			{"did not end", "workflow stuck did not end: it is running", func(t *testing.T, service string, e *workflow.Engine) {
				// Started on an engine whose jobs never run: it stays running.
				flow, err := instance.StepFlow(e, s, service, "nobody", 0, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.InTx(ctx, func(tx store.Tx) error {
					return instance.StartStepFlow(ctx, tx, flow, service, "stuck", instance.StepFlowInput{})
				}); err != nil {
					t.Fatal(err)
				}
			}},
			{"step ran twice", "workflow flow-1: step 3 ran 2 times", func(t *testing.T, service string, _ *workflow.Engine) {
				ranAgain(t, s, service, "flow-1", 3)
			}},
		} {
			t.Run(c.name, func(t *testing.T) {
				service := "svc-flows-" + strings.ReplaceAll(c.name, " ", "-")
				e := runFlows(t, s, service)
				c.plant(t, service, e)
				inv, err := workflowInvariant(ctx, s, e, service)
				if err != nil {
					t.Fatal(err)
				}
				if inv.Violations != 1 || len(inv.Details) != 1 || !strings.HasPrefix(inv.Details[0], c.want) {
					t.Errorf("%+v; want one violation: %s", inv, c.want)
				}
			})
		}
	})
}

// runFlows runs the step flows flow-0 (to complete) and flow-1 (to fail at its fourth step
// and compensate) of service on a node in this process until both have ended, and returns
// an engine that reads them as the checker does.
func runFlows(t *testing.T, s *store.Store, service string) *workflow.Engine {
	t.Helper()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: s.DSN().Raw, Schema: s.Schema(), Name: service, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	flow, err := instance.StepFlow(node.Workflows(), node.Store(), service, node.ID(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.InTx(ctx, func(tx store.Tx) error {
		for i, fail := range []bool{false, true} {
			if err := instance.StartStepFlow(ctx, tx, flow, service, "flow-"+strconv.Itoa(i), instance.StepFlowInput{Fail: fail}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e, done, err := flowEngine(s, service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(done)
	testnode.EventuallyNil(t, time.Minute, func() error {
		left, err := e.List(ctx, workflow.ListParams{States: []workflow.State{workflow.Running, workflow.Compensating}})
		if err == nil && len(left) > 0 {
			err = fmt.Errorf("%d flows have not ended", len(left))
		}
		return err
	})
	return e
}

// ranAgain records one more run of step of the step flow id, as a second run of a completed
// step would.
func ranAgain(t *testing.T, s *store.Store, service, id string, step int) {
	t.Helper()
	if _, err := s.Exec(context.Background(), "INSERT INTO "+instance.FlowStepsTable+" (service, workflow_id, step, instance, at) VALUES ($1, $2, $3, 'b', 0)",
		service, id, step); err != nil {
		t.Fatal(err)
	}
}

// migrated opens db with the checker's tables.
func migrated(t *testing.T, db testdb.DB) *store.Store {
	t.Helper()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, instance.Components()...).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// coveredByAnalyserTest reports whether an invariant of a run has a case above.
func coveredByAnalyserTest(name string) bool {
	for key := range analyserCases() {
		if strings.HasPrefix(name, key) {
			return true
		}
	}
	return false
}

func publishCheckEvents(t *testing.T, s *store.Store, service string, n int) []int64 {
	t.Helper()
	var ids []int64
	for range n {
		var id int64
		if err := s.QueryRow(context.Background(), `INSERT INTO twice_events (service, topic, key, hash, payload) VALUES ($1, $2, '', 0, $3) RETURNING id`,
			service, instance.CheckTopic, []byte("x")).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func handle(t *testing.T, s *store.Store, service, group string, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		if _, err := s.Exec(context.Background(), "INSERT INTO "+instance.EffectsCheckTable+" (service, grp, event_id, instance) VALUES ($1, $2, $3, 'a')",
			service, group, id); err != nil {
			t.Fatal(err)
		}
	}
}

// checkJob enqueues one of the checker's jobs and puts it in state.
func checkJob(t *testing.T, s *store.Store, service string, state jobs.State) int64 {
	t.Helper()
	ctx := context.Background()
	c, err := jobs.New(block.Deps{Store: s, Service: service, Instance: "checker"}, jobs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	r, err := c.Enqueue(ctx, jobs.Raw{KindName: "check-job"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if state == jobs.Completed {
		if _, err := s.Exec(ctx, "UPDATE twice_jobs SET state = 4 WHERE id = $1", r.ID); err != nil {
			t.Fatal(err)
		}
	}
	return r.ID
}

func runJob(t *testing.T, s *store.Store, service string, id int64, attempt int, on string, at time.Time) {
	t.Helper()
	if _, err := s.Exec(context.Background(), "INSERT INTO "+instance.CheckJobRuns+" (service, job_id, attempt, instance, claimed, started) VALUES ($1, $2, $3, $4, $5, $5)",
		service, id, attempt, on, at.UnixNano()); err != nil {
		t.Fatal(err)
	}
}

func runTick(t *testing.T, s *store.Store, service string, tick time.Time, id int64, on string) {
	t.Helper()
	if _, err := s.Exec(context.Background(), "INSERT INTO "+instance.CheckTickRuns+" (service, tick, job_id, attempt, instance, claimed, started) VALUES ($1, $2, $3, 1, $4, $5, $5)",
		service, tick.UTC().Format(time.RFC3339Nano), id, on, tick.UnixNano()); err != nil {
		t.Fatal(err)
	}
}

// A stall counts as a fault from when the cluster could count the instance dead until its
// heartbeats landed again; one that began and never ended (the instance was killed first)
// lasts until the instance was gone.
func TestStallsAreFaults(t *testing.T) {
	t.Parallel()
	s := testdb.New(t, store.SQLite).Open(t, nil)
	t0 := time.Now()
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	r := &run{s: s, report: &Report{}, log: []faultRec{{kind: FaultKill, instance: "a", start: t0.Add(9 * time.Second), end: t0.Add(9 * time.Second)}}}
	faults := r.faultsAndStalls([]instance.Event{
		{Event: "stalling", ID: "a", From: at(time.Second), T: at(time.Second)}, // killed at 9s, never landed
		{Event: "stalling", ID: "b", From: at(2 * time.Second), T: at(2 * time.Second)},
		{Event: "stall", ID: "b", From: at(2 * time.Second), T: at(3 * time.Second)}, // landed at 3s
	})
	for _, c := range []struct {
		instance string
		from, to time.Duration
		want     bool
	}{
		{"a", 0, 500 * time.Millisecond, false},
		{"a", 5 * time.Second, 6 * time.Second, true},
		{"a", 20 * time.Second, 21 * time.Second, true},
		{"b", 2500 * time.Millisecond, 2600 * time.Millisecond, true},
		{"b", 4 * time.Second, 5 * time.Second, false},
		{"c", 0, time.Hour, false},
	} {
		if got := faultedBetween(faults, c.instance, t0.Add(c.from), t0.Add(c.to)); got != c.want {
			t.Errorf("%s faulted in [%v, %v]: %v, want %v", c.instance, c.from, c.to, got, c.want)
		}
	}
	if r.report.Stalls != 1 {
		t.Errorf("unexplained stalls %d, want 1 (b's; a's ended in its kill)", r.report.Stalls)
	}
}
