package conformance

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// exerciseEventsDelivery checks what happens to each event: exactly-once effects, retries
// then the dead letter, and a dead letter that commits with the checkpoint.
func exerciseEventsDelivery(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ExactlyOnceEffects", eventsExactlyOnceEffects},
		{"RetriesThenDeadLetter", eventsRetriesThenDeadLetter},
		{"ExactlyOnceDeadLetterCommitsWithCheckpoint", eventsExactlyOnceDeadLetterCommitsWithCheckpoint},
		{"CloseWritesTheCheckpoint", eventsCloseWritesTheCheckpoint},
	})
}

// A consumer that closes writes the checkpoint of every event it handled, also the last
// batch's, which a reader on PostgreSQL otherwise writes with its next read: the group's
// next consumer starts after them. The last event's handler is still running when Close
// begins (it dawdles after saying it was handled), as in a deploy under load.
func eventsCloseWritesTheCheckpoint(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	handled := make(chan string, 100)
	cfg := events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 1,
		Handle: func(ctx context.Context, e events.Event) error {
			handled <- string(e.Payload)
			if string(e.Payload) == "4" {
				time.Sleep(200 * time.Millisecond)
			}
			return nil
		}}
	first, err := a.Events().Subscribe(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Events().Publish(ctx, msgs("t", 5, 1)...); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		select {
		case <-handled:
		case <-time.After(30 * time.Second):
			t.Fatal("the first consumer did not handle its 5 events")
		}
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	subscribe(t, a, cfg)
	if _, err := a.Events().Publish(ctx, events.Message{Topic: "t", Key: "k0", Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-handled:
		if got != "after" {
			t.Fatalf("the next consumer handled event %q again; want only the event published after the close", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the next consumer handled nothing")
	}
}

func eventsExactlyOnceEffects(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a, b := backend.node(t, db, "svc", testnode.Fast()), backend.node(t, db, "svc", testnode.Fast())
	if _, err := a.Store().Exec(ctx, "CREATE TABLE effects (event_id BIGINT NOT NULL, instance TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*twice.Node{a, b} {
		subscribe(t, n, events.GroupConfig{Name: "fx", Topics: []string{"pay"}, Mode: events.ExactlyOnce, Rebalance: 50 * time.Millisecond,
			HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
				_, err := tx.Exec(ctx, "INSERT INTO effects (event_id, instance) VALUES ($1, $2)", e.ID, n.ID())
				return err
			}})
	}
	const n = 300
	var ids []int64
	for i := 0; i < n; i += 50 {
		got, err := a.Events().Publish(ctx, msgs("pay", 50, 7)...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	testnode.Eventually(t, 30*time.Second, "every effect", func() bool { return count(t, a.Store(), "SELECT count(*) FROM effects") >= n })
	if dup := count(t, a.Store(), "SELECT count(*) FROM (SELECT event_id FROM effects GROUP BY event_id HAVING count(*) > 1) d"); dup != 0 {
		t.Fatalf("%d events took effect twice", dup)
	}
	// Each event the publisher was told about has its one effect.
	for _, id := range ids {
		if count(t, a.Store(), "SELECT count(*) FROM effects WHERE event_id = "+strconv.FormatInt(id, 10)) != 1 {
			t.Fatalf("event %d does not have exactly one effect", id)
		}
	}
	lag, err := a.Events().Lag(ctx, "fx")
	if err != nil || lag.Pending != 0 || len(lag.Partitions) != events.DefaultPartitions {
		t.Fatalf("Lag = %+v, %v", lag, err)
	}
}

func eventsRetriesThenDeadLetter(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	rec := newRecorder()
	var mu sync.Mutex
	attempts := map[string]int{}
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 1, MaxAttempts: 3, RetryBackoff: time.Millisecond,
		Handle: func(ctx context.Context, e events.Event) error {
			mu.Lock()
			attempts[string(e.Payload)]++
			n := attempts[string(e.Payload)]
			mu.Unlock()
			switch string(e.Payload) {
			case "poison":
				return errors.New("cannot handle poison")
			case "flaky":
				if n < 2 {
					panic("flaky handler")
				}
			}
			rec.add("a", e)
			return nil
		}})
	ids, err := a.Events().Publish(ctx,
		events.Message{Topic: "t", Payload: []byte("first")}, events.Message{Topic: "t", Payload: []byte("poison")},
		events.Message{Topic: "t", Payload: []byte("flaky")}, events.Message{Topic: "t", Payload: []byte("last")})
	if err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the events after the poison", func() bool { return len(rec.all()) == 3 })
	dead, err := a.Events().DeadLetters(ctx, "g", 0, 0)
	if err != nil || len(dead) != 1 || dead[0].EventID != ids[1] || dead[0].Attempts != 3 {
		t.Fatalf("DeadLetters = %+v, %v", dead, err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Attempts are counted by the partition's owner. On a loaded machine the partition
	// lease can change hands mid-retry and the new owner starts again (at least once),
	// so more attempts are allowed; fewer never are, and the dead letter (above) records
	// exactly MaxAttempts.
	if attempts["poison"] < 3 || attempts["flaky"] < 2 || attempts["first"] < 1 {
		t.Fatalf("attempts %v", attempts)
	}
}

func eventsExactlyOnceDeadLetterCommitsWithCheckpoint(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Steady())
	if _, err := a.Store().Exec(ctx, "CREATE TABLE effects (payload TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	tries := 0
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Mode: events.ExactlyOnce, Partitions: 1,
		MaxAttempts: 2, RetryBackoff: time.Millisecond,
		HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
			// The effect is written before the failure: it must roll back.
			if _, err := tx.Exec(ctx, "INSERT INTO effects (payload) VALUES ($1)", string(e.Payload)); err != nil {
				return err
			}
			if string(e.Payload) == "poison" {
				mu.Lock()
				tries++
				mu.Unlock()
				return errors.New("poison")
			}
			return nil
		}})
	poisonDeadLettered(t, a, 2)
	mu.Lock()
	defer mu.Unlock()
	// Once in the batch, then twice alone. The node's leases are steady ones: a 400 ms
	// partition lease lost under load would hand the partition over mid-retry, and the
	// new owner would start counting again.
	if tries != 3 {
		t.Fatalf("poison tried %d times, want 3", tries)
	}
}

// poisonDeadLettered publishes "a", "poison" and "b" to topic t, waits until n's
// exactly-once group g (which writes each payload into the table effects, then fails on
// "poison") is past them all, and checks that only the two good effects committed and the
// poison was dead-lettered after attempts tries. It returns the dead letter.
func poisonDeadLettered(t *testing.T, n *twice.Node, attempts int) events.DeadLetter {
	t.Helper()
	ctx := context.Background()
	ids, err := n.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("a")}, events.Message{Topic: "t", Payload: []byte("poison")},
		events.Message{Topic: "t", Payload: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the group past the poison", func() bool {
		lag, err := n.Events().Lag(ctx, "g")
		return err == nil && lag.Pending == 0
	})
	if k := count(t, n.Store(), "SELECT count(*) FROM effects WHERE payload = 'poison'"); k != 0 {
		t.Fatalf("%d effects of the failed event committed", k)
	}
	if k := count(t, n.Store(), "SELECT count(*) FROM effects"); k != 2 {
		t.Fatalf("%d effects, want 2", k)
	}
	dead, err := n.Events().DeadLetters(ctx, "g", 0, 0)
	if err != nil || len(dead) != 1 || dead[0].EventID != ids[1] || dead[0].Attempts != attempts {
		t.Fatalf("DeadLetters = %+v, %v", dead, err)
	}
	return dead[0]
}
