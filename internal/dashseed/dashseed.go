// Package dashseed opens a service with something on every page of the dashboard, for the
// dashboard's tests and the browser test of `twice dashboard`.
package dashseed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/events"
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
	// Dead are the ids of the Poisoned events the group Group gave up on, in log order.
	Dead []int64
	g    *billing
}

// Cure lets the group Group's handler take the event id from now on, as a fix deployed
// would.
func (s Service) Cure(id int64) {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.g.cured[id] = true
}

// Handled is how many times the group Group has handled the event id without an error.
func (s Service) Handled(id int64) int {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	return s.g.handled[id]
}

// billing is the group Group's handler: it fails on a poison event not yet cured.
type billing struct {
	mu      sync.Mutex // protects the maps
	cured   map[int64]bool
	handled map[int64]int
}

func (b *billing) handle(_ context.Context, e events.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if strings.HasPrefix(string(e.Payload), "poison") && !b.cured[e.ID] {
		return errors.New(PoisonText)
	}
	b.handled[e.ID]++
	return nil
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
	// Topic has PlacedEvents events, Poisoned of which the group Group (Shared, Partitions
	// partitions, on the first instance, one attempt an event) gives up on; OtherTopic has
	// one event, which no group reads.
	Topic        = "order.placed"
	OtherTopic   = "order.shipped"
	Group        = "billing"
	Partitions   = 2
	PlacedEvents = 5
	Poisoned     = 2
	PoisonText   = "the card was refused"
)

// Open opens n instances of the service "shop" on s and seeds it: MailJobs mail jobs
// available, a Fail job discarded, the completed workflow Workflow, the setting Setting,
// User signed in and online in Room, the schedule Schedule with a tick fired, and the
// events of Topic and OtherTopic, handled by the group Group but for Poisoned dead letters.
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
	svc := Service{Nodes: nodes, Discarded: res.ID}
	svc.Dead, svc.g = seedEvents(t, node)
	return svc
}

// seedEvents publishes the events of Topic and OtherTopic, subscribes the group Group on
// node, and waits until it is past them all, holding every partition. It returns the
// dead letters' ids.
func seedEvents(t *testing.T, node *twice.Node) ([]int64, *billing) {
	t.Helper()
	ctx := context.Background()
	var msgs []events.Message
	for i := range PlacedEvents {
		payload := fmt.Sprintf("order-%d", i)
		if i%2 == 1 && i/2 < Poisoned {
			payload = fmt.Sprintf("poison-%d", i)
		}
		msgs = append(msgs, events.Message{Topic: Topic, Key: fmt.Sprint(i), Payload: []byte(payload)})
	}
	ids, err := node.Events().Publish(ctx, append(msgs, events.Message{Topic: OtherTopic, Payload: []byte("shipped")})...)
	if err != nil {
		t.Fatal(err)
	}
	var dead []int64
	for i, m := range msgs {
		if strings.HasPrefix(string(m.Payload), "poison") {
			dead = append(dead, ids[i])
		}
	}
	b := &billing{cured: map[int64]bool{}, handled: map[int64]int{}}
	c, err := node.Events().Subscribe(ctx, events.GroupConfig{Name: Group, Topics: []string{Topic}, Partitions: Partitions,
		MaxAttempts: 1, Handle: b.handle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	testnode.Eventually(t, 30*time.Second, "the group past every event, holding every partition", func() bool {
		lag, err := node.Events().Lag(ctx, Group)
		if err != nil || lag.Pending != 0 || lag.DeadLetters != Poisoned {
			return false
		}
		for _, p := range lag.Partitions {
			if p.Owner == "" {
				return false
			}
		}
		return len(lag.Partitions) == Partitions
	})
	return dead, b
}
