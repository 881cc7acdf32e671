package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

type tick struct{ Report string }

func (tick) Kind() string { return "tick" }

// cronFast is the node config of the cron tests: a stub database clock the test moves, and
// a dead-after period long enough that moving the clock never makes an instance look dead.
func cronFast(clock store.Clock) twice.Config {
	cfg := jobsFast()
	cfg.Clock = clock
	cfg.DeadAfter = time.Minute
	cfg.LeaseTTL = 30 * time.Second
	cfg.Cron.Poll = 10 * time.Millisecond
	return cfg
}

// ticksOf returns the tick stamps of the jobs schedule fired, and fails on a tick fired twice.
func ticksOf(t *testing.T, n *twice.Node, schedule string) []string {
	t.Helper()
	rows, err := n.Jobs().List(context.Background(), jobs.ListParams{Kind: "tick", Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	for i := len(rows) - 1; i >= 0; i-- {
		r := rows[i]
		if r.Meta["cron"] != schedule || r.Meta["tick"] == "" {
			continue
		}
		if seen[r.Meta["tick"]] {
			t.Errorf("%s: tick %s fired twice", schedule, r.Meta["tick"])
		}
		seen[r.Meta["tick"]] = true
		out = append(out, r.Meta["tick"])
	}
	return out
}

// exerciseCron checks schedules across instances: each tick fires exactly once however many
// instances fire, a restart never skips one, catch-up and overlap policies hold, the stored
// schedule follows the code, every-instance schedules run everywhere, and Trigger works.
func exerciseCron(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"BadScheduleNamesIt", cronBadScheduleNamesIt},
		{"ExactlyOncePerTickWithTwoFirers", cronExactlyOncePerTickWithTwoFirers},
		{"RestartNeverSkipsATick", cronRestartNeverSkipsATick},
		{"CatchUpPolicies", cronCatchUpPolicies},
		{"OverlapSkipAndWait", cronOverlapSkipAndWait},
		{"StoredScheduleFollowsTheCode", cronStoredScheduleFollowsTheCode},
		{"EveryInstanceMode", cronEveryInstanceMode},
		{"Trigger", cronTrigger},
	})
}

func cronBadScheduleNamesIt(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	for _, c := range []struct{ name, expr string }{
		{"nightly-report", "61 * * * *"}, {"nightly-report", "* * *"}, {"nightly-report", ""},
		{"nightly-report", "CRON_TZ=Mars/Olympus 0 3 * * *"}, {"nightly-report", "@every 10ms"}, {"bad name!", "@hourly"},
	} {
		err := n.Cron().Add(c.name, c.expr, tick{}, nil)
		if !errors.Is(err, cron.ErrInvalid) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("Add(%q, %q): %v; want ErrInvalid naming the schedule", c.name, c.expr, err)
		}
	}
	if err := n.Cron().Add("x", "@hourly", tick{}, &cron.Opts{CatchUp: "sometimes"}); !errors.Is(err, cron.ErrInvalid) {
		t.Errorf("bad catch-up policy: %v", err)
	}
}

func cronExactlyOncePerTickWithTwoFirers(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	a, b := backend.node(t, db, "svc", cronFast(clock)), backend.node(t, db, "svc", cronFast(clock))
	for _, n := range []*twice.Node{a, b} {
		if err := n.Cron().Add("every-second", "* * * * * *", tick{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Both instances fire at every tick, as two instances that both believe they lead
	// would; and the real leader's loop fires too.
	for range 10 {
		clock.Advance(time.Second)
		var wg sync.WaitGroup
		for _, n := range []*twice.Node{a, b} {
			wg.Go(func() {
				if _, _, err := n.Cron().Fire(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	if got := ticksOf(t, a, "every-second"); len(got) != 10 {
		t.Errorf("%d ticks fired over 10 seconds: %v", len(got), got)
	}
}

func cronRestartNeverSkipsATick(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	a := backend.node(t, db, "svc", cronFast(clock))
	if err := a.Cron().Add("hourly", "0 * * * *", tick{}, nil); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, _, err := a.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Down across the next tick: when an instance is back, that tick fires (late; with
	// the default catch-up policy once), it is not skipped.
	clock.Advance(time.Hour)
	b := backend.node(t, db, "svc", cronFast(clock))
	if err := b.Cron().Add("hourly", "0 * * * *", tick{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ticksOf(t, b, "hourly"); len(got) != 2 {
		t.Errorf("ticks after a restart: %v", got)
	}
	entries, err := cron.List(ctx, b.Store(), "svc")
	if err != nil || len(entries) != 1 || entries[0].LastTick.IsZero() || !entries[0].NextTick.After(entries[0].LastTick) {
		t.Fatalf("list: %+v %v", entries, err)
	}
}

func cronCatchUpPolicies(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	n := backend.node(t, db, "svc", cronFast(clock))
	for name, policy := range map[string]cron.CatchUp{"skip": cron.CatchUpSkip, "once": cron.CatchUpOnce, "all": cron.CatchUpAll} {
		if err := n.Cron().Add(name, "* * * * *", tick{}, &cron.Opts{CatchUp: policy, Grace: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	// Ten minutes without a firer: one tick is within the grace period, nine are missed.
	clock.Advance(10 * time.Minute)
	if _, _, err := n.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"skip": 1, "once": 2, "all": 10} {
		if got := ticksOf(t, n, name); len(got) != want {
			t.Errorf("catch-up %s: %d ticks fired, want %d", name, len(got), want)
		}
	}
	// Counted once whichever look fired them (this one or the leader's own): skip fired 1
	// on time and passed 9, once fired 1 late and 1 on time and passed 8, all fired 9 late
	// and 1 on time.
	if st, want := n.Cron().Stats(), (cron.Stats{Fired: 13, Late: 10, Skipped: 17}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	// The latest ticks with their jobs, newest first.
	recent, err := cron.Recent(ctx, n.Jobs(), "all", tick{}.Kind(), 3)
	if err != nil || len(recent) != 3 {
		t.Fatalf("recent ticks of all: %+v, %v", recent, err)
	}
	for i, r := range recent {
		if r.State != jobs.Available || r.JobID == 0 || (i > 0 && !r.Tick.Before(recent[i-1].Tick)) {
			t.Errorf("recent tick %d of %+v", i, recent)
		}
	}
	if once, err := cron.Recent(ctx, n.Jobs(), "once", tick{}.Kind(), 5); err != nil || len(once) != 2 {
		t.Errorf("recent ticks of once: %+v, %v; want its 2", once, err)
	}
}

func cronOverlapSkipAndWait(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	n := backend.node(t, db, "svc", cronFast(clock))
	release := make(chan struct{})
	var started atomic.Int32
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[tick]) error {
		started.Add(1)
		if job.Args.Report == "block" {
			<-release
		}
		return nil
	})
	for name, policy := range map[string]cron.Overlap{"skip": cron.OverlapSkip, "wait": cron.OverlapWait} {
		if err := n.Cron().Add(name, "* * * * * *", tick{Report: "block"}, &cron.Opts{Overlap: policy}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Second)
	if _, _, err := n.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "both first ticks run", func() bool { return started.Load() == 2 })
	clock.Advance(time.Second) // a tick while the first ones still run
	if _, _, err := n.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	if s, w := len(ticksOf(t, n, "skip")), len(ticksOf(t, n, "wait")); s != 1 || w != 1 {
		t.Fatalf("while running: skip fired %d, wait fired %d; want 1 and 1", s, w)
	}
	close(release)
	testnode.Eventually(t, 20*time.Second, "first ticks finish", func() bool {
		rows, _ := n.Jobs().List(ctx, jobs.ListParams{States: []jobs.State{jobs.Completed}})
		return len(rows) >= 2 // the leader's own loop may already have fired the held tick
	})
	if _, _, err := n.Cron().Fire(ctx); err != nil { // no new tick: only the held one
		t.Fatal(err)
	}
	if s, w := len(ticksOf(t, n, "skip")), len(ticksOf(t, n, "wait")); s != 1 || w != 2 {
		t.Errorf("after: skip fired %d (its tick was dropped), wait fired %d (held, then fired); want 1 and 2", s, w)
	}
}

func cronStoredScheduleFollowsTheCode(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	n := backend.node(t, db, "svc", cronFast(clock))
	for _, name := range []string{"kept", "dropped"} {
		if err := n.Cron().Add(name, "0 * * * *", tick{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The expression changes in a new release, and "dropped" is no longer declared.
	if err := n.Cron().Add("kept", "* * * * * *", tick{}, nil); err != nil {
		t.Fatal(err)
	}
	n.Cron().Remove("dropped")
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { n.Cron().Lead(lctx); close(done) }()
	testnode.Eventually(t, 20*time.Second, "dropped marked undeclared", func() bool {
		es, err := cron.List(ctx, n.Store(), "svc")
		return err == nil && len(es) == 2 && es[0].Name == "dropped" && !es[0].Declared && es[1].Expr == "* * * * * *"
	})
	cancel()
	<-done
	clock.Advance(2 * time.Hour)
	if _, _, err := n.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	if k, d := len(ticksOf(t, n, "kept")), len(ticksOf(t, n, "dropped")); k == 0 || d != 0 {
		t.Errorf("kept fired %d, dropped fired %d", k, d)
	}
}

func cronEveryInstanceMode(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	var runs [2]atomic.Int32
	nodes := []*twice.Node{backend.node(t, db, "svc", cronFast(clock)), backend.node(t, db, "svc", cronFast(clock))}
	for i, n := range nodes {
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[tick]) error {
			runs[i].Add(1)
			return nil
		})
		if err := n.Cron().Add("local-flush", "@every 1s", tick{}, &cron.Opts{Mode: cron.EveryInstance}); err != nil {
			t.Fatal(err)
		}
	}
	clock.AdvanceUntil(t, time.Second, 20*time.Second, "each instance ran the tick", func() bool { return runs[0].Load() >= 1 && runs[1].Load() >= 1 })
	if rows, _ := nodes[0].Jobs().List(ctx, jobs.ListParams{}); len(rows) != 0 {
		t.Errorf("every-instance ticks left %d job rows", len(rows))
	}
}

func cronTrigger(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	if err := n.Cron().Add("report", "0 3 * * *", tick{Report: "daily"}, &cron.Opts{Location: mustLoc(t, "Europe/Berlin")}); err != nil {
		t.Fatal(err)
	}
	r, err := n.Cron().Trigger(ctx, "report")
	if err != nil {
		t.Fatal(err)
	}
	row, err := n.Jobs().Get(ctx, r.ID)
	var args tick
	if err == nil {
		err = json.Unmarshal(row.Args, &args)
	}
	if err != nil || row.Meta["trigger"] != "manual" || args.Report != "daily" {
		t.Fatalf("triggered: %+v %v", row, err)
	}
	if _, err := n.Cron().Trigger(ctx, "nope"); !errors.Is(err, cron.ErrNotFound) {
		t.Errorf("trigger of a missing schedule: %v", err)
	}
	es, err := cron.List(ctx, n.Store(), "svc")
	if err != nil || len(es) != 1 || es[0].TZ != "Europe/Berlin" {
		t.Fatalf("list: %+v %v", es, err)
	}
	if h := es[0].NextTick.In(mustLoc(t, "Europe/Berlin")).Hour(); h != 3 {
		t.Errorf("next tick at %v, hour %d in Berlin", es[0].NextTick, h)
	}
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
