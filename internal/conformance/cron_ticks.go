package conformance

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

// exerciseCronTicks checks what a tick's worker learns of its tick, and the options an
// every-instance schedule cannot honour.
func exerciseCronTicks(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"EveryInstanceRefusesWhatItCannotHonour", cronEveryInstanceRefusesWhatItCannotHonour},
		{"TickJobCarriesItsKeyAndTick", cronTickJobCarriesItsKeyAndTick},
		{"EveryInstanceTickTime", cronEveryInstanceTickTime},
	})
}

func cronEveryInstanceRefusesWhatItCannotHonour(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	for _, o := range []cron.Opts{
		{CatchUp: cron.CatchUpAll}, {CatchUp: cron.CatchUpOnce}, {CatchUpLimit: 5}, {Grace: time.Hour},
		{Overlap: cron.OverlapSkip}, {Overlap: cron.OverlapWait}, {Job: &jobs.Opts{Queue: "mail"}},
	} {
		o.Mode = cron.EveryInstance
		err := n.Cron().Add("local-flush", "@every 1s", tick{}, &o)
		if !errors.Is(err, cron.ErrInvalid) || !strings.Contains(err.Error(), `"local-flush"`) ||
			!strings.Contains(err.Error(), string(cron.EveryInstance)) {
			t.Errorf("every-instance with %+v: %v; want ErrInvalid naming the schedule and the mode", o, err)
		}
	}
	// What it does anyway is accepted: missed ticks are skipped, ticks may overlap.
	ok := cron.Opts{Mode: cron.EveryInstance, CatchUp: cron.CatchUpSkip, Overlap: cron.OverlapAllow}
	if err := n.Cron().Add("local-flush", "@every 1s", tick{}, &ok); err != nil {
		t.Errorf("every-instance with skip and allow: %v", err)
	}
}

// A tick's job shows the unique key it was inserted under, and cron.TickTime gives the
// tick on every attempt, though a retry moves the job's ScheduledAt.
func cronTickJobCarriesItsKeyAndTick(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	// Ten minutes into an hour: the minute the test moves the clock by must not cross the
	// next hourly tick, as it could when the test starts at, say, 17:59.
	clock := testdb.NewClockAt(time.Now().Truncate(time.Hour).Add(10 * time.Minute))
	n := backend.node(t, db, "svc", cronFast(clock))
	type seen struct {
		uniqueKey     string
		tick, sched   time.Time
		ok            bool
		attempt       int
		id            int64
		scheduledMeta string
	}
	var mu sync.Mutex
	var runs []seen
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[tick]) error {
		at, ok := cron.TickTime(job.Row)
		mu.Lock()
		runs = append(runs, seen{uniqueKey: job.UniqueKey, tick: at, ok: ok, sched: job.ScheduledAt, attempt: job.Attempt,
			id: job.ID, scheduledMeta: job.Meta["tick"]})
		mu.Unlock()
		if job.Attempt == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	})
	if err := n.Cron().Add("hourly", "0 * * * *", tick{}, nil); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, _, err := n.Cron().Fire(ctx); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(runs)
	}
	testnode.Eventually(t, 20*time.Second, "the first attempt", func() bool { return count() >= 1 })
	mu.Lock()
	id := runs[0].id
	mu.Unlock()
	// Once the failure is recorded (its retry due 10 ms after, in the stub clock's
	// time), move the clock past the backoff.
	testnode.Eventually(t, 20*time.Second, "the first attempt's failure recorded", func() bool {
		row, err := n.Jobs().Get(ctx, id)
		return err == nil && row.State == jobs.Available && row.Attempt == 1
	})
	clock.Advance(time.Minute)
	testnode.Eventually(t, 20*time.Second, "the retry", func() bool { return count() >= 2 })
	mu.Lock()
	first, second := runs[0], runs[1]
	mu.Unlock()
	row, err := n.Jobs().Get(ctx, first.id)
	if err != nil {
		t.Fatal(err)
	}
	wantTick := time.Unix(clock.Now().Add(-time.Minute).Unix()/3600*3600, 0)
	for _, r := range []seen{first, second} {
		if r.uniqueKey == "" || r.uniqueKey != row.UniqueKey || !strings.Contains(r.uniqueKey, "hourly") ||
			!strings.Contains(r.uniqueKey, r.scheduledMeta) {
			t.Errorf("attempt %d: UniqueKey %q; stored %q", r.attempt, r.uniqueKey, row.UniqueKey)
		}
		if !r.ok || !r.tick.Equal(wantTick) {
			t.Errorf("attempt %d: TickTime %v %v; want %v", r.attempt, r.tick, r.ok, wantTick)
		}
	}
	if second.sched.Equal(wantTick) {
		t.Errorf("the retry's ScheduledAt %v is still the tick: the test does not show TickTime's worth", second.sched)
	}
	if _, ok := cron.TickTime(&jobs.Row{Meta: map[string]string{"cron": "hourly", "trigger": "manual"}}); ok {
		t.Error("TickTime of a manual trigger")
	}
}

func cronEveryInstanceTickTime(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	n := backend.node(t, db, "svc", cronFast(clock))
	got := make(chan time.Time, 10)
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[tick]) error {
		if at, ok := cron.TickTime(job.Row); ok {
			got <- at
		}
		return nil
	})
	if err := n.Cron().Add("local-flush", "@every 1s", tick{}, &cron.Opts{Mode: cron.EveryInstance}); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	clock.AdvanceUntil(t, time.Second, 20*time.Second, "an every-instance tick with its time", func() bool {
		select {
		case at = <-got:
			return true
		default:
			return false
		}
	})
	if at.IsZero() || at.UnixNano()%int64(time.Second) != 0 || at.After(clock.Now()) {
		t.Errorf("every-instance tick %v at %v", at, clock.Now())
	}
}
