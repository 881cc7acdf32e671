package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/jobs"
)

type SendEmail struct {
	UserID int64 `json:"user_id"`
}

func (SendEmail) Kind() string { return "send-email" }

// openNode opens a node of service "shop" on a new SQLite file, with cfg's Jobs if given.
func openNode(ctx context.Context, cfg ...twice.Config) (*twice.Node, func()) {
	dir, err := os.MkdirTemp("", "twice-jobs-example-")
	if err != nil {
		log.Fatal(err)
	}
	c := twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop", Logger: slog.New(slog.DiscardHandler)}
	if len(cfg) > 0 {
		c.Jobs = cfg[0].Jobs
	}
	node, err := twice.Open(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	return node, func() {
		_ = node.Close(ctx)
		os.RemoveAll(dir)
	}
}

// Enqueue a job in the same transaction as the business write, and work it.
func Example() {
	ctx := context.Background()
	node, done := openNode(ctx)
	defer done()

	worked := make(chan string, 1)
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[SendEmail](func(ctx context.Context, job *jobs.Job[SendEmail]) error {
		worked <- fmt.Sprintf("email to user %d, attempt %d", job.Args.UserID, job.Attempt)
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}

	tx, err := node.Store().DB().BeginTx(ctx, nil) // a *sql.Tx; a pgx.Tx works too
	if err != nil {
		log.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE signups (user_id INTEGER)"); err != nil {
		log.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO signups VALUES (42)"); err != nil {
		log.Fatal(err)
	}
	if _, err := node.Jobs().EnqueueTx(ctx, tx, SendEmail{UserID: 42}, nil); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-worked)
	// Output: email to user 42, attempt 1
}

// A failing job is retried with backoff until its attempts run out, then kept as discarded.
func ExampleClient_Retry() {
	ctx := context.Background()
	node, done := openNode(ctx)
	defer done()
	var fail atomic.Bool
	fail.Store(true)
	finished := make(chan struct{}, 10)
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[SendEmail](func(ctx context.Context, job *jobs.Job[SendEmail]) error {
		defer func() { finished <- struct{}{} }()
		if fail.Load() {
			return errors.New("mail server down")
		}
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	r, err := node.Jobs().Enqueue(ctx, SendEmail{UserID: 7}, &jobs.Opts{MaxAttempts: 1})
	if err != nil {
		log.Fatal(err)
	}
	<-finished
	row := waitFor(ctx, node, r.ID, jobs.Discarded)
	fmt.Println(row.State, row.Attempt, row.LastError)

	fail.Store(false)
	if err := node.Jobs().Retry(ctx, r.ID); err != nil { // what `twice jobs retry ID` does
		log.Fatal(err)
	}
	<-finished
	row = waitFor(ctx, node, r.ID, jobs.Completed)
	fmt.Println(row.State, row.Attempt)
	// Output:
	// discarded 1 mail server down
	// completed 2
}

// Discard a scheduled job that should not run: it ends at once, with the reason as its last
// error, and Retry would run it again. A running job is refused: cancel it instead.
func ExampleClient_Discard() {
	ctx := context.Background()
	node, done := openNode(ctx)
	defer done()
	r, err := node.Jobs().Enqueue(ctx, SendEmail{UserID: 7}, &jobs.Opts{Delay: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	if err := node.Jobs().Discard(ctx, r.ID, "the user unsubscribed"); err != nil { // `twice jobs discard ID --reason …`
		log.Fatal(err)
	}
	row, err := node.Jobs().Get(ctx, r.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(row.State, row.Attempt, row.LastError)
	err = node.Jobs().Discard(ctx, r.ID, "")
	fmt.Println(errors.Is(err, jobs.ErrFinished))
	// Output:
	// discarded 0 discarded by hand: the user unsubscribed
	// true
}

func waitFor(ctx context.Context, node *twice.Node, id int64, st jobs.State) *jobs.Row {
	for {
		row, err := node.Jobs().Get(ctx, id)
		if err != nil {
			log.Fatal(err)
		}
		if row.State == st {
			return row
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ListTx sees what the caller's transaction enqueued before it commits; List, outside it,
// does not. A test checks that a request's transaction enqueued its job this way (see the
// twicetest package).
func ExampleClient_ListTx() {
	ctx := context.Background()
	node, done := openNode(ctx)
	defer done()
	tx, err := node.Store().DB().BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := node.Jobs().EnqueueTx(ctx, tx, SendEmail{UserID: 42}, &jobs.Opts{Queue: "mail"}); err != nil {
		log.Fatal(err)
	}
	inTx, err := node.Jobs().ListTx(ctx, tx, jobs.ListParams{Kind: SendEmail{}.Kind()})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(inTx), inTx[0].Queue, string(inTx[0].Args))
	// Output: 1 mail {"user_id":42}
}

// KindOf names the kind of an argument type without a value of it, as tests and tools that
// look jobs up by type need.
func ExampleKindOf() {
	fmt.Println(jobs.KindOf[SendEmail]())
	// Output: send-email
}

// SyncCRM calls an outside API that allows each customer 2 calls per 200 ms.
type SyncCRM struct {
	CustomerID string `json:"customer_id"`
}

func (SyncCRM) Kind() string    { return "sync-crm" }
func (SyncCRM) Opts() jobs.Opts { return jobs.Opts{Queue: "crm"} }

// A rate limit per customer, for every instance together: each customer's third job
// starts a full window after its first, while the other customer's jobs go on.
func ExampleRateLimit() {
	ctx := context.Background()
	limit := jobs.RateLimit{Limit: 2, Period: 200 * time.Millisecond, ByField: "customer_id"}
	node, done := openNode(ctx, twice.Config{Jobs: jobs.Config{Queues: []jobs.QueueConfig{{Name: "crm", RateLimit: limit}}}})
	defer done()

	var mu sync.Mutex
	starts := map[string][]time.Time{}
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[SyncCRM](func(ctx context.Context, job *jobs.Job[SyncCRM]) error {
		mu.Lock()
		defer mu.Unlock()
		starts[job.Args.CustomerID] = append(starts[job.Args.CustomerID], job.AttemptedAt) // when the limit counted it
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	var params []jobs.Params
	for range 3 {
		params = append(params, jobs.Params{Args: SyncCRM{CustomerID: "acme"}}, jobs.Params{Args: SyncCRM{CustomerID: "globex"}})
	}
	if _, err := node.Jobs().EnqueueMany(ctx, params); err != nil {
		log.Fatal(err)
	}
	for {
		mu.Lock()
		n := len(starts["acme"]) + len(starts["globex"])
		mu.Unlock()
		if n == 6 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []string{"acme", "globex"} {
		at := starts[c]
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		fmt.Printf("%s: third job a window after the first: %v\n", c, at[2].Sub(at[0]) >= limit.Period)
	}
	stats, err := node.Jobs().Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(stats[0].Queue, stats[0].RateLimit)
	// Output:
	// acme: third job a window after the first: true
	// globex: third job a window after the first: true
	// crm 2/200ms by customer_id
}

// Observe each attempt as it ends, for metrics: its queue, kind, outcome, time in the queue
// and running time.
func ExampleClient_Observe() {
	ctx := context.Background()
	node, done := openNode(ctx, twice.Config{Jobs: jobs.Config{Backoff: func(int) time.Duration { return time.Millisecond }}})
	defer done()
	ended := make(chan jobs.Attempt, 2)
	node.Jobs().Observe(func(a jobs.Attempt) { ended <- a })
	var calls atomic.Int32
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[SendEmail](func(ctx context.Context, job *jobs.Job[SendEmail]) error {
		if calls.Add(1) == 1 {
			return errors.New("mail server busy")
		}
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := node.Jobs().Enqueue(ctx, SendEmail{UserID: 7}, &jobs.Opts{MaxAttempts: 2}); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		a := <-ended
		fmt.Println(a.Queue, a.Kind, a.State, a.Wait >= 0, a.Run > 0)
	}
	// Output:
	// default send-email available true true
	// default send-email completed true true
}
