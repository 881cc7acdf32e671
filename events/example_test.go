package events_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openNode opens a node on a throwaway SQLite file, as a laptop run would.
func openNode() (*twice.Node, func()) {
	dir, err := os.MkdirTemp("", "twice-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	return node, func() { node.Close(ctx); os.RemoveAll(dir) }
}

// Publish in the business transaction (the outbox): the event exists if and only if the
// order does. A shared group handles each event on one instance, in order per key.
func ExampleLog_PublishTx() {
	node, cleanup := openNode()
	defer cleanup()
	ctx := context.Background()
	if _, err := node.Store().Exec(ctx, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)"); err != nil {
		log.Fatal(err)
	}

	handled := make(chan events.Event)
	c, err := node.Events().Subscribe(ctx, events.GroupConfig{
		Name:   "emails",
		Topics: []string{"order.placed"},
		Handle: func(ctx context.Context, e events.Event) error {
			handled <- e // send the confirmation email; an error retries it
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	err = node.Store().InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, total) VALUES (42, 1999)"); err != nil {
			return err
		}
		_, err := node.Events().PublishTx(ctx, tx, events.Message{Topic: "order.placed", Key: "order-42", Payload: []byte(`{"total":1999}`)})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	e := <-handled
	fmt.Println(e.Topic, e.Key, string(e.Payload))
	// Output:
	// order.placed order-42 {"total":1999}
}

// An exactly-once group gets a transaction: its effects and its checkpoint commit together,
// so a crash can neither lose nor repeat them.
func ExampleLog_Subscribe_exactlyOnce() {
	node, cleanup := openNode()
	defer cleanup()
	ctx := context.Background()
	if _, err := node.Store().Exec(ctx, "CREATE TABLE revenue (day TEXT PRIMARY KEY, cents INTEGER NOT NULL)"); err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{}, 3)
	c, err := node.Events().Subscribe(ctx, events.GroupConfig{
		Name:   "revenue",
		Topics: []string{"payment"},
		Mode:   events.ExactlyOnce,
		HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
			_, err := tx.Exec(ctx, `INSERT INTO revenue (day, cents) VALUES ('today', $1)
				ON CONFLICT (day) DO UPDATE SET cents = revenue.cents + excluded.cents`, len(e.Payload))
			done <- struct{}{}
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := node.Events().Publish(ctx,
		events.Message{Topic: "payment", Payload: make([]byte, 100)},
		events.Message{Topic: "payment", Payload: make([]byte, 250)},
		events.Message{Topic: "payment", Payload: make([]byte, 650)}); err != nil {
		log.Fatal(err)
	}
	for range 3 {
		<-done
	}
	lag, err := node.Events().Lag(ctx, "revenue")
	for err == nil && lag.Pending > 0 { // the last transaction may still be committing
		time.Sleep(10 * time.Millisecond)
		lag, err = node.Events().Lag(ctx, "revenue")
	}
	var cents int
	if err := node.Store().Reader().QueryRow(ctx, "SELECT cents FROM revenue").Scan(&cents); err != nil {
		log.Fatal(err)
	}
	fmt.Println("revenue:", cents, "pending:", lag.Pending)
	// Output:
	// revenue: 1000 pending: 0
}

// An event-sourced stream: decide on the loaded history, append with the version it had.
// A writer that decided on an older version gets a conflict and must decide again.
func ExampleLog_AppendTx() {
	node, cleanup := openNode()
	defer cleanup()
	ctx := context.Background()
	evs := node.Events()

	v, err := evs.Append(ctx, "cart-7", events.NoStream, events.Message{Payload: []byte("-"), Headers: map[string]string{"type": "Created"}})
	if err != nil {
		log.Fatal(err)
	}
	err = node.Store().InTx(ctx, func(tx store.Tx) error {
		history, err := evs.LoadTx(ctx, tx, "cart-7", nil)
		if err != nil {
			return err
		}
		version := history[len(history)-1].Version
		_, err = evs.AppendTx(ctx, tx, "cart-7", version, events.Message{Payload: []byte("apple"), Headers: map[string]string{"type": "ItemAdded"}})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// A writer still at version 1 is refused.
	_, err = evs.Append(ctx, "cart-7", v, events.Message{Payload: []byte("pear")})
	fmt.Println(errors.Is(err, events.ErrConflict), err)

	history, _ := evs.Load(ctx, "cart-7", nil)
	for _, e := range history {
		fmt.Println(e.Version, e.Topic, e.Headers["type"], string(e.Payload))
	}
	// Output:
	// true events: stream "cart-7": expected version 1, found 2
	// 1 cart Created -
	// 2 cart ItemAdded apple
}

// RecentTx sees what the caller's transaction published before it commits, newest first:
// the read a test uses to check that a request published its events (see the twicetest
// package).
func ExampleLog_RecentTx() {
	node, cleanup := openNode()
	defer cleanup()
	ctx := context.Background()
	err := node.Store().InTx(ctx, func(tx store.Tx) error {
		if _, err := node.Events().PublishTx(ctx, tx,
			events.Message{Topic: "order.placed", Key: "order-1"},
			events.Message{Topic: "order.placed", Key: "order-2"}); err != nil {
			return err
		}
		evs, err := node.Events().RecentTx(ctx, tx, "order.placed", 10)
		if err != nil {
			return err
		}
		for _, e := range evs {
			fmt.Println(e.Topic, e.Key)
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// order.placed order-2
	// order.placed order-1
}
