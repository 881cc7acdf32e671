// Package dashseed opens a service with something on every page of the dashboard, for the
// dashboard's tests and the browser test of `twice dashboard`.
package dashseed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// Mail is a job of the queue "mail", which nobody works: its jobs stay available.
type Mail struct{ To string }

// Kind is "mail".
func (Mail) Kind() string { return "mail" }

// Opts puts it in the queue "mail".
func (Mail) Opts() jobs.Opts { return jobs.Opts{Queue: "mail"} }

// Fail is a job whose worker always fails, after which it is discarded.
type Fail struct{}

// Kind is "fail".
func (Fail) Kind() string { return "fail" }

// Opts gives it one attempt.
func (Fail) Opts() jobs.Opts { return jobs.Opts{MaxAttempts: 1} }

// Digest is the job of the schedule Schedule, in the queue "reports", which nobody works:
// its ticks' jobs stay available.
type Digest struct{}

// Kind is "digest".
func (Digest) Kind() string { return "digest" }

// Opts puts it in the queue "reports".
func (Digest) Opts() jobs.Opts { return jobs.Opts{Queue: "reports"} }

// Service is the seeded service, "shop".
type Service struct {
	Nodes []*twice.Node
	// Discarded is the id of the Fail job, discarded.
	Discarded int64
}

// Constants of what Open seeds.
const (
	MailJobs = 3
	Workflow = "order-42"
	Setting  = "checkout.enabled" // set to true
	FailText = "the mail server said no"
	User     = "alice" // signed in to one session, and online in Room through one connection
	Room     = "lobby"
	Schedule = "digest" // every second, once per tick; Open waits for its first tick
)

// Open opens n instances of the service "shop" on s and seeds it: MailJobs mail jobs
// available, a Fail job discarded, the completed workflow Workflow, the setting Setting,
// User signed in and online in Room, and the schedule Schedule with a tick fired.
func Open(t *testing.T, s twicetest.Store, n int) Service {
	t.Helper()
	ctx := context.Background()
	nodes := twicetest.Open(t, n, &twicetest.Options{Store: s, Service: "shop"})
	node := nodes[0]
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[Fail](func(context.Context, *jobs.Job[Fail]) error {
		return errors.New(FailText)
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i := range MailJobs {
		if _, err := node.Jobs().Enqueue(ctx, Mail{To: fmt.Sprintf("user%d@example.com", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	res, err := node.Jobs().Enqueue(ctx, Fail{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	flow, err := workflow.Register(node.Workflows(), workflow.Def[string]{Name: "order", Version: 1,
		Run: func(wc *workflow.Context, id string) error {
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "reserve",
				Do: func(context.Context, string) (string, error) { return "held " + id, nil }})
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flow.Start(ctx, Workflow, "42"); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Settings().Set(ctx, Setting, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Presence().Connect(ctx, User, Room); err != nil {
		t.Fatal(err)
	}
	signIn := node.Sessions().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := session.SetUser(r.Context(), User); err != nil {
			t.Error(err)
		}
	}))
	signIn.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/", nil))
	if err := node.Cron().Add(Schedule, "@every 1s", Digest{}, nil); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 30*time.Second, "the Fail job discarded, the workflow completed and a digest tick fired", func() bool {
		ticks, err := cron.Recent(ctx, node.Jobs(), Schedule, Digest{}.Kind(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ticks) == 0 {
			return false
		}
		row, err := node.Jobs().Get(ctx, res.ID)
		if err != nil {
			t.Fatal(err)
		}
		st, err := node.Workflows().Get(ctx, Workflow)
		if err != nil {
			t.Fatal(err)
		}
		return row.State == jobs.Discarded && st.State == workflow.Completed
	})
	return Service{Nodes: nodes, Discarded: res.ID}
}
