package twicetest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type Other struct{}

func (Other) Kind() string { return "other" }

// A failed RequireEnqueued says what it looked for and lists the jobs that were there; a
// job enqueued in a transaction that rolled back is not there.
func TestRequireEnqueuedFailsListingWhatWasThere(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
		if _, err := n.Jobs().Enqueue(ctx, Other{}, &jobs.Opts{Queue: "q1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Jobs().Enqueue(ctx, WelcomeEmail{UserID: 7}, nil); err != nil {
			t.Fatal(err)
		}
		msg := testnode.Failure(t, func(t testing.TB) {
			twicetest.RequireEnqueued(t, n, nil, &twicetest.EnqueuedOpts[WelcomeEmail]{Where: func(a WelcomeEmail) bool { return a.UserID == 8 }})
		})
		for _, want := range []string{`no "welcome-email" job that Where accepts enqueued in service "test" (committed)`, `kind "other", queue "q1", state available`, `kind "welcome-email", queue "default", state available, args {"user_id":`} {
			if !strings.Contains(msg, want) {
				t.Errorf("the failure does not say %q:\n%s", want, msg)
			}
		}
		msg = testnode.Failure(t, func(t testing.TB) {
			twicetest.RequireEnqueued(t, n, nil, &twicetest.EnqueuedOpts[WelcomeEmail]{Queue: "mail", State: jobs.Completed})
		})
		if want := `no "welcome-email" job in queue "mail" in state completed enqueued`; !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q:\n%s", want, msg)
		}

		rolledBack := fmt.Errorf("rolled back")
		err := n.Store().InTx(ctx, func(tx store.Tx) error {
			if _, err := n.Jobs().EnqueueTx(ctx, tx, WelcomeEmail{UserID: 9}, nil); err != nil {
				return err
			}
			twicetest.RequireEnqueued(t, n, tx, &twicetest.EnqueuedOpts[WelcomeEmail]{Where: func(a WelcomeEmail) bool { return a.UserID == 9 }})
			return rolledBack
		})
		if err != rolledBack {
			t.Fatal(err)
		}
		testnode.Failure(t, func(t testing.TB) {
			twicetest.RequireEnqueued(t, n, nil, &twicetest.EnqueuedOpts[WelcomeEmail]{Where: func(a WelcomeEmail) bool { return a.UserID == 9 }})
		})
	})
}

// A failed RequirePublished lists the events of every topic that were there.
func TestRequirePublishedFailsListingWhatWasThere(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
		if _, err := n.Events().Publish(ctx, events.Message{Topic: "user.deleted", Key: "7", Payload: []byte(`{"why":"asked"}`)}); err != nil {
			t.Fatal(err)
		}
		msg := testnode.Failure(t, func(t testing.TB) {
			twicetest.RequirePublished(t, n, nil, "user.signed-up", nil)
		})
		for _, want := range []string{`no event of topic "user.signed-up" published in service "test" (committed)`, `topic "user.deleted", key "7", payload {"why":"asked"}`} {
			if !strings.Contains(msg, want) {
				t.Errorf("the failure does not say %q:\n%s", want, msg)
			}
		}
		msg = testnode.Failure(t, func(t testing.TB) {
			twicetest.RequirePublished(t, n, nil, "user.deleted", &twicetest.PublishedOpts{Key: "8"})
		})
		if want := `no event of topic "user.deleted" with key "8"`; !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q:\n%s", want, msg)
		}
	})
}

// Work fails, naming the queue, when jobs wait in a queue nobody works, and leaves a
// paused queue and jobs scheduled for later alone.
func TestWorkNamesAQueueNobodyWorks(t *testing.T) {
	ctx := context.Background()
	n := twicetest.Open(t, 1, nil)[0]
	if _, err := n.Jobs().Enqueue(ctx, Other{}, &jobs.Opts{Queue: "nobody"}); err != nil {
		t.Fatal(err)
	}
	_, err := twicetest.Work(ctx, n)
	if err == nil || !strings.Contains(err.Error(), `queue "nobody" has 1 jobs and no live instance works it`) {
		t.Fatalf("Work: %v; want it to name the queue nobody works", err)
	}
	if err := n.Jobs().PauseQueue(ctx, "nobody"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Jobs().Enqueue(ctx, Other{}, &jobs.Opts{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	stats, err := twicetest.Work(ctx, n)
	if err != nil {
		t.Fatalf("Work with a paused queue and a job due in an hour: %v", err)
	}
	for _, s := range stats {
		if s.Queue == jobs.DefaultQueue && s.Scheduled != 1 {
			t.Errorf("default queue: %+v; want the scheduled job left", s)
		}
	}
}

// Work gives up when its context ends, listing the queues that still hold work.
func TestWorkStopsWithItsContext(t *testing.T) {
	ctx := context.Background()
	n := twicetest.Open(t, 1, nil)[0]
	release := make(chan struct{})
	defer close(release)
	err := jobs.Register(n.Jobs(), jobs.WorkFunc[Other](func(ctx context.Context, job *jobs.Job[Other]) error {
		<-release
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Jobs().Enqueue(ctx, Other{}, nil); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = twicetest.Work(short, n)
	if err == nil || !strings.Contains(err.Error(), `queue "default": 0 available, 1 running`) {
		t.Fatalf("Work: %v; want the running job listed", err)
	}
}

func TestOpenRefusesAnUnknownStore(t *testing.T) {
	msg := testnode.Failure(t, func(t testing.TB) { twicetest.Open(t, 1, &twicetest.Options{Store: "mysql"}) })
	if !strings.Contains(msg, `unknown store "mysql"`) {
		t.Fatalf("Open with an unknown store: %s", msg)
	}
	msg = testnode.Failure(t, func(t testing.TB) { twicetest.Open(t, 0, nil) })
	if !strings.Contains(msg, "at least one node") {
		t.Fatalf("Open with no node: %s", msg)
	}
}
