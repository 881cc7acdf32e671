package twicetest_test

// The tests in this file are the package's examples: each is how a service's own test
// uses twicetest. Each runs on SQLite, and on PostgreSQL where TWICE_TEST_POSTGRES_URL is
// set.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
)

type WelcomeEmail struct {
	UserID int64 `json:"user_id"`
}

func (WelcomeEmail) Kind() string { return "welcome-email" }

// signup is the service code under test: it records the user, enqueues the welcome email
// and publishes the event, all in the caller's transaction.
func signup(ctx context.Context, n *twice.Node, tx store.Tx, userID int64) error {
	if _, err := tx.Exec(ctx, "INSERT INTO users (id) VALUES ($1)", userID); err != nil {
		return err
	}
	if _, err := n.Jobs().EnqueueTx(ctx, tx, WelcomeEmail{UserID: userID}, &jobs.Opts{Queue: "mail"}); err != nil {
		return err
	}
	_, err := n.Events().PublishTx(ctx, tx, events.Message{Topic: "user.signed-up", Key: fmt.Sprint(userID)})
	return err
}

// A test checks what a transaction enqueued and published, inside it and after it
// committed.
func TestExampleRequireEnqueuedAndPublished(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
		if _, err := n.Store().Exec(ctx, "CREATE TABLE users (id BIGINT PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		err := n.Store().InTx(ctx, func(tx store.Tx) error {
			if err := signup(ctx, n, tx, 42); err != nil {
				return err
			}
			job := twicetest.RequireEnqueued(t, n, tx, &twicetest.EnqueuedOpts[WelcomeEmail]{
				Queue: "mail",
				Where: func(a WelcomeEmail) bool { return a.UserID == 42 },
			})
			if job.State != jobs.Available {
				t.Errorf("the email job is %s; want available", job.State)
			}
			twicetest.RequirePublished(t, n, tx, "user.signed-up", &twicetest.PublishedOpts{Key: "42"})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Committed: the same checks without a transaction.
		twicetest.RequireEnqueued[WelcomeEmail](t, n, nil, nil)
		twicetest.RequirePublished(t, n, nil, "user.signed-up", nil)
	})
}

// Three instances work one queue; Work waits until it is empty, whichever instance ran
// each job.
func TestExampleWork(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 3, &twicetest.Options{Store: s})
		var mu sync.Mutex
		sent := map[int64]string{} // user → the instance that sent the email
		for _, n := range nodes {
			err := jobs.Register(n.Jobs(), jobs.WorkFunc[WelcomeEmail](func(ctx context.Context, job *jobs.Job[WelcomeEmail]) error {
				mu.Lock()
				defer mu.Unlock()
				sent[job.Args.UserID] = n.ID()
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
		}
		for id := range int64(20) {
			if _, err := nodes[int(id)%3].Jobs().Enqueue(ctx, WelcomeEmail{UserID: id}, nil); err != nil {
				t.Fatal(err)
			}
		}
		stats, err := twicetest.Work(ctx, nodes[0])
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(sent) != 20 || stats[0].Completed != 20 {
			t.Fatalf("%d emails sent, %d jobs completed; want 20 of each", len(sent), stats[0].Completed)
		}
	})
}

// A cron schedule fires on demand with Trigger; Work then runs the job it enqueued.
func TestExampleTriggerASchedule(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
		ran := make(chan struct{}, 1)
		err := jobs.Register(n.Jobs(), jobs.WorkFunc[Digest](func(ctx context.Context, job *jobs.Job[Digest]) error {
			ran <- struct{}{}
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Cron().Add("daily-digest", "0 7 * * *", Digest{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Cron().Trigger(ctx, "daily-digest"); err != nil {
			t.Fatal(err)
		}
		if _, err := twicetest.Work(ctx, n); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ran:
		case <-time.After(time.Second):
			t.Fatal("Work returned before the digest ran")
		}
	})
}

type Digest struct{}

func (Digest) Kind() string { return "digest" }

// A node whose heartbeats stop looks dead to the others, which run its job again; once its
// heartbeats resume, it is a live member again and hears of the stall.
func TestExampleStopHeartbeats(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		a, b := nodes[0], nodes[1]
		started := make(chan string, 2)
		release := make(chan struct{})
		work := func(n *twice.Node) jobs.WorkFunc[Digest] {
			return func(ctx context.Context, job *jobs.Job[Digest]) error {
				started <- n.ID()
				<-release
				return nil
			}
		}
		stalled := make(chan struct{}, 1)
		a.OnHeartbeatStall(func(from, to time.Time) { stalled <- struct{}{} })
		runOnA(t, a, b, work, started)
		resume := twicetest.StopHeartbeats(t, a)
		startsAgainOn(t, b, started)
		close(release)
		resume()
		waitFor(t, "a alive again", func() bool {
			ms, err := b.Members(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				if m.ID == a.ID() {
					return m.Alive
				}
			}
			return false
		})
		select {
		case <-stalled:
		case <-time.After(5 * time.Second):
			t.Fatal("a heard of no stall")
		}
	})
}

// A node that cannot hear the bus still works the jobs others enqueue, at its queue's poll
// instead of at once, and vouches for the bus again once it is restored.
func TestExampleCutBus(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		cfg := twice.Config{Jobs: jobs.Config{Poll: 200 * time.Millisecond}}
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s, Config: cfg})
		a, b := nodes[0], nodes[1]
		ran := make(chan struct{}, 10)
		err := jobs.Register(b.Jobs(), jobs.WorkFunc[Digest](func(ctx context.Context, job *jobs.Job[Digest]) error {
			ran <- struct{}{}
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		restore := twicetest.CutBus(t, b)
		if bus.Delivering(b.Bus()) {
			t.Fatal("a node cut from the bus vouches for it")
		}
		for range 2 {
			if _, err := a.Jobs().Enqueue(ctx, Digest{}, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ran: // found by b's poll while cut, woken after
			case <-time.After(20 * time.Second):
				t.Fatal("b did not run the job within 20s")
			}
			restore()
		}
		if !bus.Delivering(b.Bus()) {
			t.Fatal("the restored bus does not vouch")
		}
	})
}

// A crashed node hands nothing over: the other node counts it dead, runs the job it was
// running again and leads in its place, and it stays listed, dead, as it never left.
func TestExampleCrash(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		a, b := nodes[0], nodes[1]
		waitFor(t, "a leader", func() bool { return a.IsLeader() || b.IsLeader() })
		if b.IsLeader() {
			a, b = b, a // a is the leader
		}
		started := make(chan string, 2)
		work := func(n *twice.Node) jobs.WorkFunc[Digest] {
			return func(ctx context.Context, job *jobs.Job[Digest]) error {
				started <- n.ID()
				if n == a {
					<-ctx.Done() // the crash cancels it; what it returns is dropped
				}
				return nil
			}
		}
		runOnA(t, a, b, work, started)
		twicetest.Crash(t, a)
		startsAgainOn(t, b, started)
		waitFor(t, "b leads", b.IsLeader)
		ms, err := b.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.ID == a.ID() && m.Alive {
				t.Fatal("a is alive after its crash")
			}
		}
		if len(ms) != 2 {
			t.Fatalf("%d members listed; want a, dead, and b", len(ms))
		}
	})
}

// runOnA enqueues a digest and waits until it starts on a, the only node that works it
// yet; then b works digests too, so that only a fault of a's makes b run it. work(n) is
// n's worker, which sends n's id on started as a digest starts.
func runOnA(t *testing.T, a, b *twice.Node, work func(n *twice.Node) jobs.WorkFunc[Digest], started <-chan string) {
	t.Helper()
	if err := jobs.Register(a.Jobs(), work(a)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Jobs().Enqueue(context.Background(), Digest{}, nil); err != nil {
		t.Fatal(err)
	}
	if first := <-started; first != a.ID() {
		t.Fatalf("the job started on %s; only a works it yet", first)
	}
	if err := jobs.Register(b.Jobs(), work(b)); err != nil {
		t.Fatal(err)
	}
}

// startsAgainOn waits until the job runOnA started starts again, on b: rescued from a.
func startsAgainOn(t *testing.T, b *twice.Node, started <-chan string) {
	t.Helper()
	select {
	case second := <-started:
		if second != b.ID() {
			t.Fatalf("the job started again on %s; want b", second)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a's job was not rescued to b within 20s")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 20s", what)
}

// Options.Each gives each node what differs between instances: here the address each
// advertises (for forwarding), which the others see in the member list.
func TestExampleEachNode(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s, Each: func(i int, cfg *twice.Config) {
			cfg.AdvertiseAddr = fmt.Sprintf("127.0.0.1:%d", 7001+i)
		}})
		ms, err := nodes[0].Members(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, m := range ms {
			got[m.ID] = m.Addr
		}
		for i, n := range nodes {
			if want := fmt.Sprintf("127.0.0.1:%d", 7001+i); got[n.ID()] != want {
				t.Errorf("node %d advertises %q, want %q", i, got[n.ID()], want)
			}
		}
	})
}
