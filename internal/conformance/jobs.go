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
	"unicode/utf8"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
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
	cfg := testnode.Fast()
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
	testnode.Eventually(t, 20*time.Second, fmt.Sprintf("job %d %s", id, want), func() bool {
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

// exerciseJobs checks a job's life: enqueue (alone or in the caller's transaction), work,
// retry, discard, snooze, cancel, discard by hand, timeout, bad input, batches and pruning.
func exerciseJobs(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"EnqueueAndWork", jobsEnqueueAndWork},
		{"EnqueueTx", jobsEnqueueTx},
		{"RetryDiscardAndRetryFromCLI", jobsRetryDiscardAndRetryFromCLI},
		{"SnoozeDoesNotCountAnAttempt", jobsSnoozeDoesNotCountAnAttempt},
		{"CancelPendingAndRunning", jobsCancelPendingAndRunning},
		{"DiscardPendingRefuseRunning", jobsDiscardPendingRefuseRunning},
		{"DiscardReleasesTheBatch", jobsDiscardReleasesTheBatch},
		{"EndingTheLastMemberWakesTheCallback", jobsEndingTheLastMemberWakesTheCallback},
		{"ErrorTextKept", jobsErrorTextKept},
		{"TimeoutRetries", jobsTimeoutRetries},
		{"InvalidInput", jobsInvalidInput},
		{"UndecodableArgsAreDiscarded", jobsUndecodableArgsAreDiscarded},
		{"KindWithoutWorkerIsRetried", jobsKindWithoutWorkerIsRetried},
		{"BatchCallbackRunsOnceAfterAll", jobsBatchCallbackRunsOnceAfterAll},
		{"Prune", jobsPrune},
	})
}

func jobsEnqueueAndWork(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	var seen counter
	nodes := []*twice.Node{backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast())}
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
	testnode.Eventually(t, 30*time.Second, "every job ran", func() bool { return seen.len() == len(ids) })
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
}

func jobsEnqueueTx(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
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
	if backend.Dialect == store.Postgres {
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
}

func jobsRetryDiscardAndRetryFromCLI(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
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
}

func jobsSnoozeDoesNotCountAnAttempt(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
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
}

func jobsCancelPendingAndRunning(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a, b := backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast())
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
}

// Discard ends a scheduled job at once, with the reason as its error, in the caller's
// transaction if asked; it refuses a running, finished or unknown job, and Retry runs a
// discarded one again.
func jobsDiscardPendingRefuseRunning(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	started := make(chan int64, 10)
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
		started <- job.ID
		<-ctx.Done()
		return ctx.Err()
	})
	var ran counter
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
		ran.add(job.ID)
		return nil
	})
	later, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Delay: time.Hour, MaxAttempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Jobs().Discard(ctx, later.ID, "wrong customer"); err != nil {
		t.Fatal(err)
	}
	row, err := n.Jobs().Get(ctx, later.ID)
	if err != nil {
		t.Fatal(err)
	}
	if row.State != jobs.Discarded || row.LastError != "discarded by hand: wrong customer" || row.FinishedAt.IsZero() || row.Attempt != 0 {
		t.Errorf("discarded job: %s, attempt %d, error %q, finished at %v", row.State, row.Attempt, row.LastError, row.FinishedAt)
	}
	if err := n.Jobs().Discard(ctx, later.ID, ""); !errors.Is(err, jobs.ErrFinished) || !strings.Contains(err.Error(), "discarded") {
		t.Errorf("discarding a discarded job: %v", err)
	}
	if err := n.Jobs().Discard(ctx, 999999, ""); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("discarding a missing job: %v", err)
	}
	if err := n.Jobs().Retry(ctx, later.ID); err != nil {
		t.Fatal(err)
	}
	if row := waitState(t, n, later.ID, jobs.Completed); row.Attempt != 1 || ran.get(later.ID) != 1 {
		t.Errorf("the retried discarded job completed on attempt %d after %d runs", row.Attempt, ran.get(later.ID))
	}

	// In the caller's transaction: nothing changes unless it commits. No reason, and a
	// reason too long to keep whole.
	for _, commit := range []bool{false, true} {
		r, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Delay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		tx, err := n.Store().DB().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() // a no-op once it has ended
		reason := ""
		if commit {
			reason = strings.Repeat("é", jobs.MaxErrorLen)
		}
		if err := n.Jobs().DiscardTx(ctx, tx, r.ID, reason); err != nil {
			t.Fatal(err)
		}
		end := tx.Rollback
		if commit {
			end = tx.Commit
		}
		if err := end(); err != nil {
			t.Fatal(err)
		}
		row, err := n.Jobs().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !commit && (row.State != jobs.Available || row.LastError != ""):
			t.Errorf("discarded in a transaction rolled back: %s, error %q", row.State, row.LastError)
		case commit && (row.State != jobs.Discarded || len(row.LastError) > jobs.MaxErrorLen || len(row.LastError) < jobs.MaxErrorLen-1 ||
			!strings.HasPrefix(row.LastError, "discarded by hand: éé") || !utf8.ValidString(row.LastError)):
			t.Errorf("discarded with a long reason: %s, error of %d bytes starting %.30q", row.State, len(row.LastError), row.LastError)
		}
	}

	// A running job is refused, with a word on how to stop it, and runs on.
	r, err := n.Jobs().Enqueue(ctx, blocking{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := <-started; id != r.ID {
		t.Fatalf("started %d, want %d", id, r.ID)
	}
	if err := n.Jobs().Discard(ctx, r.ID, "too late"); !errors.Is(err, jobs.ErrRunning) || !strings.Contains(err.Error(), "cancel it") {
		t.Errorf("discarding a running job: %v", err)
	}
	if row, _ := n.Jobs().Get(ctx, r.ID); row.State != jobs.Running || row.LastError != "" {
		t.Errorf("the running job refused a discard is %s, error %q", row.State, row.LastError)
	}
	if err := n.Jobs().Cancel(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, n, r.ID, jobs.Cancelled)
}

// Discarding a batch's members releases its callback, which runs once; a waiting callback
// can be discarded itself, and its members still run.
func jobsDiscardReleasesTheBatch(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	var members, callbacks counter
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
		members.add(job.ID)
		return nil
	})
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[aggregate]) error {
		callbacks.add(job.ID)
		return nil
	})
	later := &jobs.Opts{Delay: time.Hour}
	res, err := n.Jobs().EnqueueBatch(ctx, []jobs.Params{{Args: noop{N: 1}, Opts: later}, {Args: noop{N: 2}, Opts: later}},
		jobs.Params{Args: aggregate{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Jobs().Discard(ctx, res.Jobs[0].ID, "not needed"); err != nil {
		t.Fatal(err)
	}
	if row, _ := n.Jobs().Get(ctx, res.ID); row.State != jobs.Waiting {
		t.Fatalf("the callback is %s with a member left", row.State)
	}
	if err := n.Jobs().Discard(ctx, res.Jobs[1].ID, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, n, res.ID, jobs.Completed)
	st, err := n.Jobs().Batch(ctx, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Finished || st.ByState[jobs.Discarded] != 2 || callbacks.get(res.ID) != 1 || members.len() != 0 {
		t.Errorf("batch %+v, callback runs %d, member runs %d", st, callbacks.get(res.ID), members.len())
	}

	res, err = n.Jobs().EnqueueBatch(ctx, []jobs.Params{{Args: noop{N: 3}, Opts: later}}, jobs.Params{Args: aggregate{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Jobs().Discard(ctx, res.ID, "no summary"); err != nil {
		t.Fatal(err)
	}
	if err := n.Jobs().Retry(ctx, res.Jobs[0].ID); err != nil { // the member runs now
		t.Fatal(err)
	}
	waitState(t, n, res.Jobs[0].ID, jobs.Completed)
	if row, _ := n.Jobs().Get(ctx, res.ID); row.State != jobs.Discarded || callbacks.get(res.ID) != 0 {
		t.Errorf("the discarded callback is %s after %d runs", row.State, callbacks.get(res.ID))
	}
}

func jobsTimeoutRetries(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
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
}

func jobsInvalidInput(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
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
}

func jobsUndecodableArgsAreDiscarded(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	r, err := n.Jobs().Enqueue(ctx, jobs.Raw{KindName: "noop", JSON: []byte(`{"N":"not a number"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	row := waitState(t, n, r.ID, jobs.Discarded)
	if row.Attempt != 1 || !strings.Contains(row.LastError, "decode") {
		t.Errorf("attempt %d, error %q", row.Attempt, row.LastError)
	}
}

func jobsKindWithoutWorkerIsRetried(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	r, err := n.Jobs().Enqueue(ctx, jobs.Raw{KindName: "unknown"}, &jobs.Opts{MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	row := waitState(t, n, r.ID, jobs.Discarded)
	if row.Attempt != 2 || !strings.Contains(row.LastError, "no worker") {
		t.Errorf("attempt %d, error %q", row.Attempt, row.LastError)
	}
}

func jobsBatchCallbackRunsOnceAfterAll(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	nodes := []*twice.Node{backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast())}
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
}

func jobsPrune(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := jobsFast()
	cfg.Jobs.CompletedRetention = time.Millisecond
	n := backend.node(t, db, "svc", cfg)
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
}

// A worker's error with a byte PostgreSQL refuses in text (invalid UTF-8, NUL) is kept, made
// valid, and the outcomes completed with it in the same batch are recorded too: the
// statement that records a batch of outcomes must not fail on one message.
func jobsErrorTextKept(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[failing]) error {
		return errors.New("bad \xff\x00 byte")
	})
	var ran counter
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
		ran.add(job.ID)
		return nil
	})
	bad, err := n.Jobs().Enqueue(ctx, failing{}, &jobs.Opts{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	var good []int64
	for i := range 20 {
		r, err := n.Jobs().Enqueue(ctx, noop{N: i}, nil)
		if err != nil {
			t.Fatal(err)
		}
		good = append(good, r.ID)
	}
	row := waitState(t, n, bad.ID, jobs.Discarded)
	if row.LastError != "bad \uFFFD byte" {
		t.Errorf("last error %q; want the message made valid", row.LastError)
	}
	for _, id := range good {
		waitState(t, n, id, jobs.Completed)
	}
}

// A batch whose last pending member is cancelled or discarded by hand releases its
// callback, and the callback's queue is woken: it runs at once, not at the queue's next
// poll, here a minute away.
func jobsEndingTheLastMemberWakesTheCallback(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := jobsFast()
	cfg.Jobs.Poll = time.Minute
	n := backend.node(t, db, "svc", cfg)
	var callbacks counter
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[aggregate]) error {
		callbacks.add(job.ID)
		return nil
	})
	later := &jobs.Opts{Delay: time.Hour}
	for _, end := range []struct {
		how string
		fn  func(id int64) error
	}{
		{"cancel", func(id int64) error { return n.Jobs().Cancel(ctx, id) }},
		{"discard", func(id int64) error { return n.Jobs().Discard(ctx, id, "") }},
		{"cancel in a transaction", func(id int64) error {
			return n.Store().InTx(ctx, func(tx store.Tx) error { return n.Jobs().CancelTx(ctx, tx, id) })
		}},
	} {
		res, err := n.Jobs().EnqueueBatch(ctx, []jobs.Params{{Args: noop{N: 1}, Opts: later}}, jobs.Params{Args: aggregate{}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the queue's looks after the enqueue's wake-up are over
		if err := end.fn(res.Jobs[0].ID); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 10*time.Second, "the callback runs after a "+end.how+" of the last member", func() bool {
			return callbacks.get(res.ID) == 1
		})
	}
}
