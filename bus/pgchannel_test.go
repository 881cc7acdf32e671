package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// Schema "X.b" with service "c" and schema "X" with service "b.c" are different
// deployments: neither may hear the other's signals.
func TestPGChannelsOfDottedNamesDoNotCollide(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t, store.Postgres)
	open := func(db testdb.DB, service string) bus.Bus {
		s := db.Open(t, nil)
		b, err := bus.NewStore(ctx, s, bus.Config{Service: service, Instance: service, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(ctx) })
		return b
	}
	a := open(base.InSchema(t, base.Schema+".b"), "c")
	b := open(base, "b.c")
	got := make(chan string, 10)
	b.Subscribe("test", func(m bus.Message) { got <- string(m.Payload) })
	if err := a.Publish(ctx, "test", []byte("from a")); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL delivers notifications in commit order: had a's reached b's channel, it
	// would arrive before b's own, sent after it.
	if err := b.Publish(ctx, "test", []byte("from b")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "from b" {
			t.Fatalf("b heard %q first: the two deployments share a NOTIFY channel", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("b never heard its own signal")
	}
}
