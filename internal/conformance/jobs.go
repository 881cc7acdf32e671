package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// The argument types of the job tests.
type (
	noop      struct{ N int }
	failing   struct{ Fails int }
	blocking  struct{ ID string }
	keyed     struct{ Key string }
	snoozing  struct{}
	aggregate struct{}
	limited   struct{}
)

func (noop) Kind() string      { return "noop" }
func (failing) Kind() string   { return "failing" }
func (blocking) Kind() string  { return "blocking" }
func (keyed) Kind() string     { return "keyed" }
func (snoozing) Kind() string  { return "snoozing" }
func (aggregate) Kind() string { return "aggregate" }
func (limited) Kind() string   { return "limited" }
func (limited) Opts() jobs.Opts {
	return jobs.Opts{Queue: "limited"}
}

// jobsFast is the node config of the job tests: short polls and quick retries. Its
// dead-after period is far longer than the cluster tests': under the race detector, with
// other packages' tests on the same two cores, a heartbeat queued behind a busy SQLite
// writer can land over a second late, and a live instance's jobs would be rescued (which
// is allowed, but makes "ran once" untestable). Tests of rescue use a ghost instance with
// its own short dead-after (ghostMember).
func jobsFast() twice.Config {
	cfg := fast
	cfg.DeadAfter = 5 * time.Second
	cfg.Jobs = jobs.Config{
		Poll:            50 * time.Millisecond,
		RescueInterval:  50 * time.Millisecond,
		Backoff:         func(int) time.Duration { return 10 * time.Millisecond },
		ShutdownTimeout: 200 * time.Millisecond,
	}
	return cfg
}

// counter counts the runs of each job id.
type counter struct {
	mu   sync.Mutex // protects runs
	runs map[int64]int
}

func (c *counter) add(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs == nil {
		c.runs = map[int64]int{}
	}
	c.runs[id]++
}

func (c *counter) get(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[id]
}

func (c *counter) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.runs)
}

func mustRegister[T jobs.Args](t *testing.T, n *twice.Node, f func(ctx context.Context, job *jobs.Job[T]) error) {
	t.Helper()
	if err := jobs.Register(n.Jobs(), jobs.WorkFunc[T](f)); err != nil {
		t.Fatal(err)
	}
}

func waitState(t *testing.T, n *twice.Node, id int64, want jobs.State) *jobs.Row {
	t.Helper()
	var row *jobs.Row
	eventually(t, 20*time.Second, fmt.Sprintf("job %d %s", id, want), func() bool {
		var err error
		row, err = n.Jobs().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return row.State == want
	})
	return row
}

// raiseTo raises m to v if v is larger: the most concurrent holders seen.
func raiseTo(m *atomic.Int32, v int32) {
	for {
		cur := m.Load()
		if v <= cur || m.CompareAndSwap(cur, v) {
			return
		}
	}
}

func jobsSuite(t *testing.T, dialect store.Dialect) {
	ctx := context.Background()

	t.Run("EnqueueAndWork", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		var seen counter
		nodes := []*twice.Node{node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast())}
		for _, n := range nodes {
			mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
				seen.add(job.ID)
				return nil
			})
		}
		var ids []int64
		for i := range 50 {
			r, err := nodes[i%2].Jobs().Enqueue(ctx, noop{N: i}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.ID)
		}
		params := make([]jobs.Params, 500)
		for i := range params {
			params[i] = jobs.Params{Args: noop{N: i}, Opts: &jobs.Opts{Priority: i % 3, Tags: []string{"bulk"}}}
		}
		rs, err := nodes[0].Jobs().EnqueueMany(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
		eventually(t, 30*time.Second, "every job ran", func() bool { return seen.len() == len(ids) })
		for _, id := range ids {
			if n := seen.get(id); n != 1 {
				t.Errorf("job %d ran %d times", id, n)
			}
		}
		row := waitState(t, nodes[0], ids[len(ids)-1], jobs.Completed)
		if row.Attempt != 1 || row.Owner != "" || len(row.Tags) != 1 || row.FinishedAt.IsZero() {
			t.Errorf("completed row: %+v", row)
		}
		listed, err := nodes[0].Jobs().List(ctx, jobs.ListParams{Tag: "bulk", Limit: 1000})
		if err != nil || len(listed) != 500 {
			t.Fatalf("list by tag: %d rows, %v", len(listed), err)
		}
	})

	t.Run("EnqueueTx", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		var seen counter
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
			seen.add(job.ID)
			return nil
		})
		// A store.Tx, a *sql.Tx and (on PostgreSQL) a pgx.Tx: committed jobs run, rolled
		// back ones never exist.
		type txn struct {
			q                any
			commit, rollback func() error
		}
		begins := map[string]func() txn{
			"store.Tx": func() txn {
				tx, err := n.Store().Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return txn{tx, func() error { return tx.Commit(ctx) }, func() error { return tx.Rollback(ctx) }}
			},
			"sql.Tx": func() txn {
				tx, err := n.Store().DB().BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				return txn{tx, tx.Commit, tx.Rollback}
			},
		}
		if dialect == store.Postgres {
			begins["pgx.Tx"] = func() txn {
				tx, err := n.Store().Pool().Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return txn{tx, func() error { return tx.Commit(ctx) }, func() error { return tx.Rollback(ctx) }}
			}
		}
		for name, begin := range begins {
			tx := begin()
			kept, err := n.Jobs().EnqueueTx(ctx, tx.q, noop{N: 1}, nil)
			if err != nil {
				t.Fatal(name, err)
			}
			// A bulk insert in the same transaction (COPY inside a pgx.Tx).
			bulk := make([]jobs.Params, 150)
			for i := range bulk {
				bulk[i] = jobs.Params{Args: noop{N: 100 + i}}
			}
			many, err := n.Jobs().EnqueueManyTx(ctx, tx.q, bulk)
			if err != nil {
				t.Fatal(name, err)
			}
			if err := tx.commit(); err != nil {
				t.Fatal(name, err)
			}
			for _, r := range many {
				waitState(t, n, r.ID, jobs.Completed)
			}
			tx = begin()
			dropped, err := n.Jobs().EnqueueTx(ctx, tx.q, noop{N: 2}, nil)
			if err != nil {
				t.Fatal(name, err)
			}
			droppedMany, err := n.Jobs().EnqueueManyTx(ctx, tx.q, bulk)
			if err != nil {
				t.Fatal(name, err)
			}
			if err := tx.rollback(); err != nil {
				t.Fatal(name, err)
			}
			waitState(t, n, kept.ID, jobs.Completed)
			for _, id := range []int64{dropped.ID, droppedMany[0].ID, droppedMany[149].ID} {
				if _, err := n.Jobs().Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
					t.Errorf("%s: rolled-back job %d: %v", name, id, err)
				}
			}
		}
	})

	t.Run("RetryDiscardAndRetryFromCLI", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		var fail atomic.Bool
		fail.Store(true)
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[failing]) error {
			if fail.Load() {
				return fmt.Errorf("boom on attempt %d", job.Attempt)
			}
			return nil
		})
		r, err := n.Jobs().Enqueue(ctx, failing{}, &jobs.Opts{MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		row := waitState(t, n, r.ID, jobs.Discarded)
		if row.Attempt != 3 || row.LastError != "boom on attempt 3" {
			t.Fatalf("discarded row: attempt %d, error %q", row.Attempt, row.LastError)
		}
		fail.Store(false)
		if err := n.Jobs().Retry(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		row = waitState(t, n, r.ID, jobs.Completed)
		if row.Attempt != 4 {
			t.Errorf("retried job finished on attempt %d, want 4", row.Attempt)
		}
		if err := n.Jobs().Retry(ctx, 999999); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("retry of a missing job: %v", err)
		}
	})

	t.Run("SnoozeDoesNotCountAnAttempt", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		var calls atomic.Int32
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[snoozing]) error {
			if calls.Add(1) < 3 {
				return jobs.Snooze(time.Millisecond)
			}
			return nil
		})
		r, err := n.Jobs().Enqueue(ctx, snoozing{}, &jobs.Opts{MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		row := waitState(t, n, r.ID, jobs.Completed)
		if row.Attempt != 1 || calls.Load() != 3 {
			t.Errorf("attempt %d after %d calls; want 1 after 3", row.Attempt, calls.Load())
		}
	})

	t.Run("CancelPendingAndRunning", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast())
		started := make(chan int64, 10)
		causes := make(chan error, 10)
		mustRegister(t, a, func(ctx context.Context, job *jobs.Job[blocking]) error {
			started <- job.ID
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		})
		later, err := b.Jobs().Enqueue(ctx, blocking{}, &jobs.Opts{Delay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Jobs().Cancel(ctx, later.ID); err != nil {
			t.Fatal(err)
		}
		waitState(t, b, later.ID, jobs.Cancelled)
		if err := b.Jobs().Cancel(ctx, later.ID); !errors.Is(err, jobs.ErrFinished) {
			t.Errorf("cancelling a cancelled job: %v", err)
		}
		// The running job is cancelled from the other instance: its context ends with
		// ErrCancelled where it runs.
		r, err := b.Jobs().Enqueue(ctx, blocking{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if id := <-started; id != r.ID {
			t.Fatalf("started %d, want %d", id, r.ID)
		}
		if err := b.Jobs().Cancel(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		if cause := <-causes; !errors.Is(cause, jobs.ErrCancelled) {
			t.Errorf("cause %v, want ErrCancelled", cause)
		}
		row := waitState(t, b, r.ID, jobs.Cancelled)
		if row.Attempt != 1 {
			t.Errorf("cancelled on attempt %d", row.Attempt)
		}
	})

	t.Run("TimeoutRetries", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
			<-ctx.Done()
			return ctx.Err()
		})
		r, err := n.Jobs().Enqueue(ctx, blocking{}, &jobs.Opts{Timeout: 20 * time.Millisecond, MaxAttempts: 2})
		if err != nil {
			t.Fatal(err)
		}
		row := waitState(t, n, r.ID, jobs.Discarded)
		if row.Attempt != 2 || !strings.Contains(row.LastError, "timed out") {
			t.Errorf("attempt %d, error %q", row.Attempt, row.LastError)
		}
	})

	t.Run("Unique", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		u := &jobs.Opts{Unique: &jobs.Unique{}, Delay: time.Hour}
		first, err := n.Jobs().Enqueue(ctx, noop{N: 7}, u)
		if err != nil {
			t.Fatal(err)
		}
		again, err := n.Jobs().Enqueue(ctx, noop{N: 7}, u)
		if err != nil {
			t.Fatal(err)
		}
		other, err := n.Jobs().Enqueue(ctx, noop{N: 8}, u)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Duplicate || again.ID != first.ID || other.Duplicate || other.ID == first.ID {
			t.Fatalf("first %+v, again %+v, other %+v", first, again, other)
		}
		// A cancelled job no longer blocks its key (the default states exclude cancelled).
		if err := n.Jobs().Cancel(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		third, err := n.Jobs().Enqueue(ctx, noop{N: 7}, u)
		if err != nil || third.Duplicate {
			t.Fatalf("after cancel: %+v %v", third, err)
		}
		// An explicit key in a window, inside a transaction.
		byKey := &jobs.Opts{Unique: &jobs.Unique{Key: "user-1", Window: time.Hour}, Delay: time.Hour}
		err = n.Store().InTx(ctx, func(tx store.Tx) error {
			rs, err := n.Jobs().EnqueueManyTx(ctx, tx, []jobs.Params{{Args: noop{N: 1}, Opts: byKey}, {Args: noop{N: 2}, Opts: byKey}})
			if err != nil {
				return err
			}
			if rs[0].Duplicate || !rs[1].Duplicate || rs[0].ID != rs[1].ID {
				return fmt.Errorf("keyed unique in one transaction: %+v", rs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("InvalidInput", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		for _, o := range []*jobs.Opts{{Priority: -1}, {Priority: 101}, {Queue: "bad\nqueue"}, {MaxAttempts: -1},
			{Unique: &jobs.Unique{States: []jobs.State{"nope"}}}, {Key: string(make([]byte, 600))}} {
			if _, err := n.Jobs().Enqueue(ctx, noop{}, o); !errors.Is(err, jobs.ErrInvalid) {
				t.Errorf("opts %+v: %v, want ErrInvalid", o, err)
			}
		}
		if _, err := n.Jobs().Enqueue(ctx, nil, nil); !errors.Is(err, jobs.ErrInvalid) {
			t.Errorf("nil args: %v", err)
		}
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[noop](func(context.Context, *jobs.Job[noop]) error { return nil })); err != nil {
			t.Fatal(err)
		}
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[noop](func(context.Context, *jobs.Job[noop]) error { return nil })); err == nil {
			t.Error("a second worker for one kind was accepted")
		}
	})

	t.Run("UndecodableArgsAreDiscarded", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		r, err := n.Jobs().Enqueue(ctx, jobs.Raw{KindName: "noop", JSON: []byte(`{"N":"not a number"}`)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		row := waitState(t, n, r.ID, jobs.Discarded)
		if row.Attempt != 1 || !strings.Contains(row.LastError, "decode") {
			t.Errorf("attempt %d, error %q", row.Attempt, row.LastError)
		}
	})

	t.Run("KindWithoutWorkerIsRetried", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		r, err := n.Jobs().Enqueue(ctx, jobs.Raw{KindName: "unknown"}, &jobs.Opts{MaxAttempts: 2})
		if err != nil {
			t.Fatal(err)
		}
		row := waitState(t, n, r.ID, jobs.Discarded)
		if row.Attempt != 2 || !strings.Contains(row.LastError, "no worker") {
			t.Errorf("attempt %d, error %q", row.Attempt, row.LastError)
		}
	})

	t.Run("PerKeySerialisation", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		nodes := []*twice.Node{node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast())}
		var mu sync.Mutex
		inside := map[string]int{}
		var worst atomic.Int32
		var done atomic.Int32
		for _, n := range nodes {
			mustRegister(t, n, func(ctx context.Context, job *jobs.Job[keyed]) error {
				mu.Lock()
				inside[job.Args.Key]++
				worst.Store(max(worst.Load(), int32(inside[job.Args.Key])))
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
				mu.Lock()
				inside[job.Args.Key]--
				mu.Unlock()
				done.Add(1)
				return nil
			})
		}
		var params []jobs.Params
		for i := range 60 {
			k := fmt.Sprintf("k%d", i%3)
			params = append(params, jobs.Params{Args: keyed{Key: k}, Opts: &jobs.Opts{Key: k}})
		}
		if _, err := nodes[0].Jobs().EnqueueMany(ctx, params); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "every keyed job ran", func() bool { return done.Load() == 60 })
		if w := worst.Load(); w != 1 {
			t.Errorf("%d jobs of one key ran at once", w)
		}
	})

	t.Run("GlobalLimit", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		var nodes []*twice.Node
		for range 3 {
			cfg := jobsFast()
			cfg.Jobs.Queues = []jobs.QueueConfig{{Name: "limited", Concurrency: 5, GlobalLimit: 2}}
			nodes = append(nodes, node(t, db, "svc", cfg))
		}
		var inside, worst, done atomic.Int32
		for _, n := range nodes {
			mustRegister(t, n, func(ctx context.Context, job *jobs.Job[limited]) error {
				raiseTo(&worst, inside.Add(1))
				time.Sleep(5 * time.Millisecond)
				inside.Add(-1)
				done.Add(1)
				return nil
			})
		}
		params := make([]jobs.Params, 40)
		for i := range params {
			params[i] = jobs.Params{Args: limited{}}
		}
		if _, err := nodes[0].Jobs().EnqueueMany(ctx, params); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "every limited job ran", func() bool { return done.Load() == 40 })
		// A worker counts itself before its completion is recorded, so the limit holds for
		// the rows; the in-process count can briefly see one finishing and one starting.
		if w := worst.Load(); w > 2 {
			t.Errorf("%d jobs of a queue limited to 2 ran at once", w)
		}
	})

	t.Run("PauseAndResume", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast())
		var ran atomic.Int32
		mustRegister(t, b, func(ctx context.Context, job *jobs.Job[noop]) error {
			ran.Add(1)
			return nil
		})
		if err := a.Jobs().PauseQueue(ctx, jobs.DefaultQueue); err != nil {
			t.Fatal(err)
		}
		r, err := a.Jobs().Enqueue(ctx, noop{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * a.Jobs().Config().Poll) // several polls and the wake-up: nothing may start
		if ran.Load() != 0 {
			t.Fatal("a job of a paused queue ran")
		}
		st, err := a.Jobs().Stats(ctx)
		if err != nil || len(st) != 1 || !st[0].Paused || st[0].Available != 1 {
			t.Fatalf("stats while paused: %+v %v", st, err)
		}
		if err := a.Jobs().ResumeQueue(ctx, jobs.DefaultQueue); err != nil {
			t.Fatal(err)
		}
		waitState(t, a, r.ID, jobs.Completed)
	})

	t.Run("DeadInstanceClaimsNothing", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		// A client whose instance the cluster counts dead (here: never registered; in life,
		// a process resuming from a pause past its dead-after) must not claim jobs: the next
		// rescue would hand them to another instance while it runs them.
		ghost, err := jobs.New(block.Deps{Store: n.Store(), Service: "svc", Instance: "ghost", Logger: testdb.Logger(t)},
			jobs.Config{Poll: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var ran atomic.Int32
		if err := jobs.Register(ghost, jobs.WorkFunc[noop](func(ctx context.Context, job *jobs.Job[noop]) error {
			ran.Add(1)
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		if err := ghost.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer ghost.Close(ctx)
		r, err := n.Jobs().Enqueue(ctx, noop{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * ghost.Config().Poll)
		if row, err := n.Jobs().Get(ctx, r.ID); err != nil || row.State != jobs.Available || row.Attempt != 0 || ran.Load() != 0 {
			t.Fatalf("a dead instance claimed a job: %+v %v, ran %d", row, err, ran.Load())
		}
		// Once it heartbeats, it works.
		member := ghostMember(t, n)
		if err := member.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		row := waitState(t, n, r.ID, jobs.Completed)
		if row.Attempt != 1 || ran.Load() != 1 {
			t.Fatalf("after registering: attempt %d, ran %d", row.Attempt, ran.Load())
		}
	})

	t.Run("RescueByLivenessAndRefusedCompletion", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		// The ghost's job is rescued, and its late completion must be refused.
		release := make(chan struct{})
		ghost, silent := ghostWorker(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
			<-release
			// A result that arrives after the rescue and the second run: accepted, it would
			// put the completed job back up for a retry.
			return errors.New("late failure from a rescued attempt")
		})
		r, err := n.Jobs().Enqueue(ctx, blocking{ID: "x"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-silent
		var second atomic.Int32
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
			second.Add(1)
			return nil
		})
		row := waitState(t, n, r.ID, jobs.Completed)
		if row.Attempt != 2 || second.Load() != 1 {
			t.Fatalf("rescued job: attempt %d, second runs %d", row.Attempt, second.Load())
		}
		close(release)
		if err := ghost.Close(ctx); err != nil {
			t.Fatal(err)
		}
		row, err = n.Jobs().Get(ctx, r.ID)
		if err != nil || row.State != jobs.Completed || row.Attempt != 2 || row.Owner != "" {
			t.Fatalf("after the ghost's late completion: %+v %v", row, err)
		}
	})

	t.Run("RescueOfTheLastAttemptDiscards", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		n := node(t, db, "svc", jobsFast())
		// The attempt its instance died in counts: a job rescued from its last attempt is
		// discarded, not run again, and Retry grants it one more.
		release := make(chan struct{})
		ghost, silent := ghostWorker(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
			<-release
			return nil
		})
		defer func() {
			close(release)
			if err := ghost.Close(ctx); err != nil {
				t.Error(err)
			}
		}()
		r, err := n.Jobs().Enqueue(ctx, blocking{ID: "last"}, &jobs.Opts{MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		<-silent
		// A worker here would run the job again if the rescue made it available.
		var runs atomic.Int32
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
			runs.Add(1)
			return nil
		})
		row := waitState(t, n, r.ID, jobs.Discarded)
		if row.Attempt != 1 || !strings.Contains(row.LastError, "stopped while running attempt 1") || row.FinishedAt.IsZero() || runs.Load() != 0 {
			t.Fatalf("rescued from its last attempt: %+v, runs elsewhere %d", row, runs.Load())
		}
		if err := n.Jobs().Retry(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		row = waitState(t, n, r.ID, jobs.Completed)
		if row.Attempt != 2 || runs.Load() != 1 {
			t.Fatalf("after Retry: attempt %d, runs %d", row.Attempt, runs.Load())
		}
	})

	t.Run("SlowJobOnLiveInstanceRunsOnce", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		// A dead-after short enough to pass three times while the job runs; a stall of the
		// heartbeats past it (an overloaded machine) excuses a second run, and is logged.
		cfg := jobsFast()
		cfg.DeadAfter = time.Second
		a, b := node(t, db, "svc", cfg), node(t, db, "svc", cfg)
		var stalls atomic.Int32
		for _, n := range []*twice.Node{a, b} {
			n.OnHeartbeatStall(func(from, to time.Time) { stalls.Add(1) })
		}
		var runs atomic.Int32
		release := make(chan struct{})
		for _, n := range []*twice.Node{a, b} {
			mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
				runs.Add(1)
				<-release
				return nil
			})
		}
		r, err := a.Jobs().Enqueue(ctx, blocking{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "job started", func() bool { return runs.Load() == 1 })
		// Three dead-after periods and dozens of rescue passes later, it still runs once.
		time.Sleep(3 * cfg.DeadAfter)
		close(release)
		row := waitState(t, a, r.ID, jobs.Completed)
		if stalls.Load() > 0 {
			t.Logf("heartbeats stalled past dead-after %d times: the job may run twice (ran %d times)", stalls.Load(), runs.Load())
		} else if runs.Load() != 1 || row.Attempt != 1 {
			t.Errorf("slow job ran %d times, attempt %d", runs.Load(), row.Attempt)
		}
	})

	t.Run("GracefulShutdownHandsBack", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", jobsFast())
		started := make(chan int64, 1)
		mustRegister(t, a, func(ctx context.Context, job *jobs.Job[blocking]) error {
			started <- job.ID
			<-ctx.Done() // runs until the shutdown gives up on it
			return context.Cause(ctx)
		})
		r, err := a.Jobs().Enqueue(ctx, blocking{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-started
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		b := node(t, db, "svc", jobsFast())
		row, err := b.Jobs().Get(ctx, r.ID)
		if err != nil || row.State != jobs.Available || row.Attempt != 0 || !strings.Contains(row.LastError, "handed back") {
			t.Fatalf("after a graceful shutdown: %+v %v", row, err)
		}
		mustRegister(t, b, func(ctx context.Context, job *jobs.Job[blocking]) error { return nil })
		waitState(t, b, r.ID, jobs.Completed)
	})

	t.Run("BatchCallbackRunsOnceAfterAll", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		nodes := []*twice.Node{node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast())}
		var members, callbacks atomic.Int32
		var finishedSeen atomic.Bool
		for _, n := range nodes {
			mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
				members.Add(1)
				if job.Args.N%5 == 0 {
					return jobs.Cancel(errors.New("not needed"))
				}
				return nil
			})
			mustRegister(t, n, func(ctx context.Context, job *jobs.Job[aggregate]) error {
				callbacks.Add(1)
				st, err := n.Jobs().Batch(ctx, job.ID)
				if err != nil {
					return err
				}
				finishedSeen.Store(st.Finished && st.Total == 20 && st.ByState[jobs.Cancelled] == 4)
				return nil
			})
		}
		params := make([]jobs.Params, 20)
		for i := range params {
			params[i] = jobs.Params{Args: noop{N: i}}
		}
		res, err := nodes[0].Jobs().EnqueueBatch(ctx, params, jobs.Params{Args: aggregate{}})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, nodes[0], res.ID, jobs.Completed)
		if members.Load() != 20 || callbacks.Load() != 1 || !finishedSeen.Load() {
			t.Errorf("members %d, callbacks %d, saw the batch finished: %v", members.Load(), callbacks.Load(), finishedSeen.Load())
		}
	})

	t.Run("Prune", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		cfg := jobsFast()
		cfg.Jobs.CompletedRetention = time.Millisecond
		n := node(t, db, "svc", cfg)
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		done, err := n.Jobs().Enqueue(ctx, noop{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		waiting, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Delay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, n, done.ID, jobs.Completed)
		time.Sleep(5 * time.Millisecond)
		k, err := n.Jobs().Prune(ctx)
		if err != nil || k != 1 {
			t.Fatalf("pruned %d, %v", k, err)
		}
		if _, err := n.Jobs().Get(ctx, done.ID); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("pruned job still there: %v", err)
		}
		if _, err := n.Jobs().Get(ctx, waiting.ID); err != nil {
			t.Errorf("a pending job was pruned: %v", err)
		}
	})

	t.Run("PriorityOrder", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		cfg := jobsFast()
		cfg.Jobs.Queues = []jobs.QueueConfig{{Name: jobs.DefaultQueue, Concurrency: 1}}
		n := node(t, db, "svc", cfg)
		params := []jobs.Params{{Args: noop{N: 3}, Opts: &jobs.Opts{Priority: 3}}, {Args: noop{N: 1}, Opts: &jobs.Opts{Priority: 1}},
			{Args: noop{N: 2}, Opts: &jobs.Opts{Priority: 2}}}
		if _, err := n.Jobs().EnqueueMany(ctx, params); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var order []int
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, job.Args.N)
			return nil
		})
		eventually(t, 20*time.Second, "three jobs", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(order) == 3
		})
		if fmt.Sprint(order) != "[1 2 3]" {
			t.Errorf("ran in order %v", order)
		}
	})
}

// ghostMember is a membership for the instance "ghost" of n's service that beats only when
// the test calls Beat (the first call registers it).
// ghostWorker starts the job client of an instance "ghost" that works the default queue's
// blocking jobs with work, one at a time. It heartbeats until its first job starts, then
// stops, like a process paused past its dead-after period with a job running; silent closes
// when it has stopped. The caller stops the client.
func ghostWorker(t *testing.T, n *twice.Node, work func(ctx context.Context, job *jobs.Job[blocking]) error) (*jobs.Client, <-chan struct{}) {
	t.Helper()
	ctx := context.Background()
	ghost, err := jobs.New(block.Deps{Store: n.Store(), Service: n.Service(), Instance: "ghost", Logger: testdb.Logger(t)},
		jobs.Config{Poll: 20 * time.Millisecond, Queues: []jobs.QueueConfig{{Name: jobs.DefaultQueue, Concurrency: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var once sync.Once
	if err := jobs.Register(ghost, jobs.WorkFunc[blocking](func(ctx context.Context, job *jobs.Job[blocking]) error {
		once.Do(func() { close(started) })
		return work(ctx, job)
	})); err != nil {
		t.Fatal(err)
	}
	member := ghostMember(t, n)
	silent := make(chan struct{})
	go func() {
		defer close(silent)
		for {
			if err := member.Beat(ctx); err != nil {
				t.Error(err)
			}
			select {
			case <-started:
				return
			case <-time.After(member.Config().HeartbeatInterval):
			}
		}
	}()
	if err := ghost.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return ghost, silent
}

func ghostMember(t *testing.T, n *twice.Node) *cluster.Membership {
	t.Helper()
	m, err := cluster.NewMembership(n.Store(), cluster.Config{Service: n.Service(), ID: "ghost",
		HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 500 * time.Millisecond, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
