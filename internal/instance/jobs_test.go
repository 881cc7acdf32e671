package instance_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// envInt and envDuration let a developer shorten the crash tests locally; CI runs the
// defaults, which are the numbers.
func envInt(t *testing.T, name string, def int) int { return envOr(t, name, def, strconv.Atoi) }

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	return envOr(t, name, def, time.ParseDuration)
}

func envOr[T any](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return x
}

// childBuild is the twice command built without the race detector, for the crash tests'
// children in race builds: race-instrumented SQLite is twenty times slower, which would turn
// a minute's test into a quarter of an hour. The parent, which checks, keeps the detector.
var childBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// crashSpawner starts the crash tests' children: this test binary, or in a race build the
// twice command built once without the detector.
func crashSpawner(t *testing.T) instance.Spawner {
	t.Helper()
	if !raceEnabled {
		return spawner(t)
	}
	childBuild.once.Do(func() {
		childBuild.dir, childBuild.err = os.MkdirTemp("", "twice-crash-child-")
		if childBuild.err != nil {
			return
		}
		childBuild.bin = filepath.Join(childBuild.dir, "twice")
		// go test puts its own GOROOT/bin first on the test's PATH, so "go" is the
		// toolchain running this test.
		out, err := exec.Command("go", "build", "-o", childBuild.bin, "github.com/twicehq/twice/cmd/twice").CombinedOutput()
		if err != nil {
			childBuild.err = fmt.Errorf("build the child binary: %v\n%s", err, out)
		}
	})
	if childBuild.err != nil {
		t.Fatal(childBuild.err)
	}
	return func() *exec.Cmd { return exec.Command(childBuild.bin, "__instance") }
}

// removeChildBuild deletes the child binary after the tests.
func removeChildBuild() {
	if childBuild.dir != "" {
		os.RemoveAll(childBuild.dir)
	}
}

// crashOptions are the crash tests' instances with the node's default timings (heartbeat
// 1 s, dead after 3 s, lease TTL 2 s): the bounds checked are the defaults' bounds. With
// much shorter ones a loaded machine (CI runs every package at once) delays lease
// renewals past their TTL and leadership flaps.
func crashOptions(db testdb.DB) instance.Options {
	return instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc"}
}

// deadAfter is the node's default dead-after period, which crashOptions keep.
const deadAfter = 3 * time.Second

// killUntil waits until left reports nothing left, then closes stop, which ends the killer.
// If that takes more than ten minutes (a bound on liveness only), it closes stop and fails t
// with what was awaited and what was left.
func killUntil(t *testing.T, stop chan<- struct{}, what string, left func() (string, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		l, err := left()
		if err != nil {
			close(stop)
			t.Fatal(err)
		}
		if l == "" {
			close(stop)
			return
		}
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("not %s within 10 minutes: %s", what, l)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// kill is one SIGKILL the test sent.
type kill struct {
	pid int
	at  time.Time // just before the signal
	// dead is once the process was gone: a start it stamped before then may have come in
	// the moment between at and the signal landing.
	dead time.Time
}

// killer SIGKILLs a random slot every period and restarts it, until stop closes.
func killer(t *testing.T, g *instance.Group, slots int, every time.Duration, stop <-chan struct{}, kills chan<- kill) {
	ctx := context.Background()
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			close(kills)
			return
		case <-tk.C:
		}
		slot := rand.IntN(slots)
		p := g.Proc(slot)
		if p == nil || p.Exited() {
			continue
		}
		k := kill{pid: p.PID(), at: time.Now()}
		if err := g.Kill(slot); err != nil {
			t.Error(err)
		}
		k.dead = time.Now()
		kills <- k
		if _, err := g.Start(ctx, slot); err != nil {
			t.Error(err)
		}
	}
}

// tail keeps the last 64 KiB the children wrote on stderr, shown if the test fails.
type tail struct {
	mu  sync.Mutex // protects buf
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - 64<<10; over > 0 {
		w.buf = w.buf[over:]
	}
	return len(p), nil
}

func (w *tail) dumpOnFailure(t *testing.T) {
	if t.Failed() {
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Logf("the children's last stderr:\n%s", w.buf)
	}
}

// startThree starts three instances with opts, keeping their stderr for a failure report.
func startThree(t *testing.T, opts instance.Options) (*instance.Group, *tail) {
	t.Helper()
	stderr := &tail{}
	g := instance.NewGroup(crashSpawner(t), opts, stderr)
	for i := range 3 {
		if _, err := g.Start(context.Background(), i); err != nil {
			g.Stop(10 * time.Second)
			stderr.dumpOnFailure(t)
			t.Fatal(err)
		}
	}
	return g, stderr
}

func migrated(t *testing.T, db testdb.DB) *store.Store {
	t.Helper()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, twice.Components()...).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJobsSurviveKills: three instances work 20,000 jobs while one is SIGKILLed every two
// seconds and restarted. Every job completes; a job runs more than once only if an earlier
// run was on an instance that was killed during it; and each rescue comes within twice the
// dead-after period of the kill.
func TestJobsSurviveKills(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		began := time.Now()
		total := envInt(t, "TWICE_CRASH_JOBS", 20000)
		every := envDuration(t, "TWICE_CRASH_KILL_EVERY", 2*time.Second)
		s := migrated(t, db)
		jc, err := jobs.New(block.Deps{Store: s, Service: "svc", Instance: "test"}, jobs.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer jc.Close(ctx)
		for from := 0; from < total; from += 1000 {
			params := make([]jobs.Params, 0, 1000)
			for i := from; i < min(total, from+1000); i++ {
				params = append(params, jobs.Params{Args: instance.CrashJob{N: i}})
			}
			if _, err := jc.EnqueueMany(ctx, params); err != nil {
				t.Fatal(err)
			}
		}

		t.Logf("%d jobs enqueued at %v", total, time.Since(began).Round(time.Millisecond))
		opts := crashOptions(db)
		opts.Workloads = []instance.Workload{instance.Jobs{Concurrency: 10, JobDuration: 20 * time.Millisecond, Report: true}}
		g, stderr := startThree(t, opts)
		defer stderr.dumpOnFailure(t)
		defer g.Stop(10 * time.Second)
		stop := make(chan struct{})
		kills := make(chan kill, 1000)
		go killer(t, g, 3, every, stop, kills)
		// Only the pending jobs are counted, through their partial indexes: cheap as the
		// queue drains.
		killUntil(t, stop, "every job completed", func() (string, error) {
			var pending, running int
			err := s.Reader().QueryRow(ctx, "SELECT (SELECT count(*) FROM twice_jobs WHERE service = 'svc' AND state = 1), "+
				"(SELECT count(*) FROM twice_jobs WHERE service = 'svc' AND state = 2)").Scan(&pending, &running)
			if err != nil || pending+running == 0 {
				return "", err
			}
			return fmt.Sprintf("%d available, %d running", pending, running), nil
		})
		t.Logf("every job completed at %v", time.Since(began).Round(time.Millisecond))
		if st, err := jc.Stats(ctx); err != nil || len(st) != 1 || st[0].Completed != total {
			t.Fatalf("stats at the end: %+v %v", st, err)
		}
		killedAt := map[int]kill{}
		for k := range kills {
			killedAt[k.pid] = k
		}
		g.Stop(10 * time.Second)

		log, _ := g.Log()
		starts := map[int64][]instance.Event{}
		for _, ev := range log {
			if ev.Event == "job" {
				starts[ev.Job] = append(starts[ev.Job], ev)
			}
		}
		if len(starts) != total {
			t.Errorf("%d jobs started, want %d", len(starts), total)
		}
		checkReruns(t, starts, killedAt, 2*deadAfter)
		t.Logf("%d jobs, %d kills", total, len(killedAt))
	})
}

// checkReruns fails t unless every job that started more than once had each earlier start
// on an instance killed after it, and started again within bound of that kill (a bound per
// rescue, when a claim in between died unreported).
func checkReruns(t *testing.T, starts map[int64][]instance.Event, killedAt map[int]kill, bound time.Duration) {
	t.Helper()
	reruns, worst := 0, time.Duration(0)
	for id, evs := range starts {
		slices.SortFunc(evs, func(a, b instance.Event) int { return a.Attempt - b.Attempt })
		for i, ev := range evs[:len(evs)-1] {
			k, killed := killedAfter(ev, killedAt)
			if !killed {
				t.Errorf("job %d ran again (attempt %d) though its run on pid %d (attempt %d) was not killed", id, evs[i+1].Attempt, ev.PID, ev.Attempt)
				continue
			}
			reruns++
			// A gap in the attempts is a claim by an instance killed before it could report
			// the start: each claim in between had its own rescue to wait for.
			next := evs[i+1]
			limit := bound * time.Duration(next.Attempt-ev.Attempt)
			rescue := next.Time().Sub(k.at)
			worst = max(worst, rescue/time.Duration(next.Attempt-ev.Attempt))
			if rescue > limit {
				t.Errorf("job %d: attempt %d ran %v after attempt %d's instance was killed, beyond %v", id, next.Attempt, rescue, ev.Attempt, limit)
			}
		}
	}
	t.Logf("%d re-runs after kills; slowest rescue %v (bound %v)", reruns, worst.Round(time.Millisecond), bound)
}

// killedAfter returns the kill of the process that reported ev, if that process was gone
// only after ev: what ev reports may have been cut short by the kill, and done again.
func killedAfter(ev instance.Event, killedAt map[int]kill) (kill, bool) {
	k, killed := killedAt[ev.PID]
	return k, killed && !k.dead.Before(ev.Time())
}

// TestCronUnderKills: a one-second schedule on three instances for 60 s while one is
// SIGKILLed every two seconds, and once all three are down for five seconds: every tick
// fires exactly once and none is missed (the ticks of the outage fire late, by the
// schedule's catch-up policy, here "all").
func TestCronUnderKills(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		length := envDuration(t, "TWICE_CRON_DURATION", 60*time.Second)
		every := envDuration(t, "TWICE_CRASH_KILL_EVERY", 2*time.Second)
		s := migrated(t, db)
		jc, err := jobs.New(block.Deps{Store: s, Service: "svc", Instance: "test"}, jobs.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer jc.Close(ctx)

		opts := crashOptions(db)
		opts.Workloads = []instance.Workload{instance.Jobs{Cron: "* * * * * *", CatchUp: cron.CatchUpAll, Grace: time.Second}}
		g, stderr := startThree(t, opts)
		defer stderr.dumpOnFailure(t)
		defer g.Stop(10 * time.Second)
		began := time.Now()
		stop := make(chan struct{})
		kills := make(chan kill, 1000)
		go killer(t, g, 3, every, stop, kills)
		time.Sleep(length / 2)
		close(stop)
		killedAt := map[int]kill{}
		for k := range kills {
			killedAt[k.pid] = k
		}
		// Everyone down for five seconds, then back, and the kills go on.
		for i := range 3 {
			if p := g.Proc(i); p != nil && !p.Exited() {
				k := kill{pid: p.PID(), at: time.Now()}
				if err := g.Kill(i); err != nil {
					t.Fatal(err)
				}
				k.dead = time.Now()
				killedAt[k.pid] = k
			}
		}
		time.Sleep(5 * time.Second)
		for i := range 3 {
			if _, err := g.Start(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
		stop = make(chan struct{})
		kills = make(chan kill, 1000)
		go killer(t, g, 3, every, stop, kills)
		time.Sleep(length/2 - 5*time.Second)
		close(stop)
		for k := range kills {
			killedAt[k.pid] = k
		}
		ended := time.Now()
		time.Sleep(3 * time.Second) // calm: the last ticks' jobs run
		g.Stop(10 * time.Second)

		rows, err := jc.List(ctx, jobs.ListParams{Kind: "cron-tick", Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var ticks []time.Time
		seen := map[string]bool{}
		for _, r := range rows {
			tick := r.Meta["tick"]
			if seen[tick] {
				t.Errorf("tick %s fired twice", tick)
			}
			seen[tick] = true
			tt, err := time.Parse(time.RFC3339Nano, tick)
			if err != nil {
				t.Fatal(err)
			}
			ticks = append(ticks, tt)
			if r.State != jobs.Completed && tt.Before(ended) {
				t.Errorf("tick %s: job %d is %s", tick, r.ID, r.State)
			}
		}
		slices.SortFunc(ticks, func(a, b time.Time) int { return a.Compare(b) })
		if len(ticks) == 0 {
			t.Fatal("no tick fired")
		}
		for i := 1; i < len(ticks); i++ {
			if gap := ticks[i].Sub(ticks[i-1]); gap != time.Second {
				t.Errorf("ticks %v and %v are %v apart: missed ticks", ticks[i-1], ticks[i], gap)
			}
		}
		if first, last := ticks[0], ticks[len(ticks)-1]; first.Sub(began) > 3*time.Second || ended.Sub(last) > 3*time.Second {
			t.Errorf("ticks from %v to %v in a run from %v to %v", first, last, began, ended)
		}
		log, _ := g.Log()
		starts := map[int64][]instance.Event{}
		for _, ev := range log {
			if ev.Event == "tick" {
				starts[ev.Job] = append(starts[ev.Job], ev)
			}
		}
		// A tick's job is at-least-once like any job: a second run only after a kill.
		checkReruns(t, starts, killedAt, 2*deadAfter)
		t.Logf("%d ticks over %v, %d kills", len(ticks), ended.Sub(began).Round(time.Second), len(killedAt))
	})
}
