package twice_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// TestDeleteServiceEmptiesEveryTable fills every block's tables with the rows of two
// services through the blocks' own APIs, as a running instance that is then killed leaves
// them, and deletes one service: every table its Component declares then holds no row of
// it, and the other service's rows are all still there.
func TestDeleteServiceEmptiesEveryTable(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := db.Open(t, nil)
		comps := twice.Components()
		fillEveryTable(t, db, s, "gone")
		fillEveryTable(t, db, s, "kept")
		kept := rowsOf(t, s, "kept")

		if n, err := store.DeleteService(ctx, s, "gone", comps...); err != nil || n == 0 {
			t.Fatalf("DeleteService = %d, %v", n, err)
		}
		for table, n := range rowsOf(t, s, "gone") {
			if n != 0 {
				t.Errorf("%s still holds %d rows of the deleted service", table, n)
			}
		}
		for table, n := range rowsOf(t, s, "kept") {
			if n != kept[table] {
				t.Errorf("%s holds %d rows of the other service, not %d", table, n, kept[table])
			}
		}
	})
}

// heldJob runs until its instance is cut off, so its key and its queue's worker stay recorded.
type heldJob struct{}

func (heldJob) Kind() string { return "held" }

// fillEveryTable runs an instance of service that writes a row of service into every table
// twice declares, then crashes it, so that what a running instance holds (its membership,
// its running job's key, its queue) stays too.
func fillEveryTable(t *testing.T, db testdb.DB, s *store.Store, service string) {
	t.Helper()
	ctx := context.Background()
	n := testnode.Open(t, db, service, twice.Config{Idempotency: idempotency.Config{Scope: idempotency.AuthorizationScope}})
	if _, err := n.Locks().Acquire(ctx, "report", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Settings().Set(ctx, "limit", 5, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Partitions().Join(ctx, partition.Config{Name: "rooms", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Presence().Connect(ctx, "alice", "lobby"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Realtime().Publish(ctx, "lobby", "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Events().Subscribe(ctx, events.GroupConfig{Name: "refuser", Topics: []string{"orders"}, Mode: events.Shared,
		MaxAttempts: 1, Handle: func(context.Context, events.Event) error { return errors.New("refused") }}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Events().Publish(ctx, events.Message{Topic: "orders", Payload: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	serve := func(h http.Handler, r *http.Request) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 300 {
			t.Fatalf("%s %s: %d %s", r.Method, r.URL, w.Code, w.Body)
		}
	}
	serve(n.Sessions().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := session.Put(r.Context(), "cart", 3); err != nil {
			t.Error(err)
		}
	})), httptest.NewRequest(http.MethodPost, "/cart", nil))
	if err := n.Sessions().SCSStore().CommitCtx(ctx, "scs-token", []byte("blob"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	pay := httptest.NewRequest(http.MethodPost, "/pay", nil)
	pay.Header.Set("Authorization", "Bearer client")
	pay.Header.Set(idempotency.Header, `"pay-1"`)
	serve(n.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})), pay)
	if err := n.Jobs().PauseQueue(ctx, "paused"); err != nil {
		t.Fatal(err)
	}
	// A rate limit records the held job's start.
	if err := n.Jobs().SetRateLimit(ctx, jobs.DefaultQueue, jobs.RateLimit{Limit: 10, Period: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := n.Cron().Add("hourly", "@hourly", heldJob{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := jobs.Register(n.Jobs(), jobs.WorkFunc[heldJob](func(ctx context.Context, _ *jobs.Job[heldJob]) error {
		<-ctx.Done() // until the crash
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Jobs().Enqueue(ctx, heldJob{}, &jobs.Opts{Key: "one-at-a-time"}); err != nil {
		t.Fatal(err)
	}
	flow, err := workflow.Register(n.Workflows(), workflow.Def[int]{Name: "flow", Run: func(wc *workflow.Context, in int) error {
		_, err := workflow.Do(wc, workflow.Step[int]{Name: "double", Do: func(context.Context, string) (int, error) { return 2 * in, nil }})
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Store().InTx(ctx, func(tx store.Tx) error {
		if _, err := flow.StartTx(ctx, tx, "flow-1", 21); err != nil {
			return err
		}
		return n.Workflows().SignalTx(ctx, tx, "flow-1", "never-waited-for", true) // kept
	})
	if err != nil {
		t.Fatal(err)
	}
	// Some rows are written in the background (the dead letter, the running job's key):
	// wait until every table has one.
	deadline := time.Now().Add(30 * time.Second)
	for {
		empty := ""
		for table, n := range rowsOf(t, s, service) {
			if n == 0 {
				empty = table
			}
		}
		if empty == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no row of %s: the test must fill every table a Component declares", empty, service)
		}
		time.Sleep(20 * time.Millisecond)
	}
	twicetest.Crash(t, n)
}

// rowsOf counts the rows of service in every table twice's Components declare, by the
// declarations alone.
func rowsOf(t *testing.T, s *store.Store, svc string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, c := range twice.Components() {
		service := map[string]string{}
		for _, tb := range c.TablesIn(s.Dialect()) {
			service[tb.Name] = tb.Service
		}
		for _, tb := range c.TablesIn(s.Dialect()) {
			q := fmt.Sprintf("SELECT count(*) FROM %s WHERE %s = $1", tb.Name, tb.Service)
			if p := tb.Parent; p != nil {
				q = fmt.Sprintf("SELECT count(*) FROM %s WHERE %s IN (SELECT %s FROM %s WHERE %s = $1)", tb.Name, p.Column, p.Key, p.Table, service[p.Table])
			} else if tb.Service == "" {
				t.Fatalf("%s: twice's tables all belong to a service, directly or through a parent", tb.Name)
			}
			var n int64
			if err := s.Reader().QueryRow(context.Background(), s.SQL(q), svc).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			out[tb.Name] = n
		}
	}
	return out
}
