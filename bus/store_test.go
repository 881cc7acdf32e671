package bus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/bustest"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func storeBackend(dialect store.Dialect) func(t *testing.T) bustest.Backend {
	return func(t *testing.T) bustest.Backend {
		db := testdb.New(t, dialect)
		ctx := context.Background()
		first := db.Open(t, nil)
		if _, err := store.NewMigrator(first, bus.Component()).Up(ctx); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		service := "svc-" + hex.EncodeToString(b)
		return bustest.Backend{
			Service: service,
			Open: func(t *testing.T, instance string, signer *bus.Signer) bus.Bus {
				s := db.Open(t, nil)
				bb, err := bus.NewStore(ctx, s, bus.Config{Service: service, Instance: instance, Signer: signer, Logger: testdb.Logger(t)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = bb.Close(ctx) })
				return bb
			},
			Begin: bustest.BeginStore(first),
			Disconnect: map[store.Dialect]func(*testing.T, string){
				store.Postgres: func(t *testing.T, instance string) {
					conn, err := pgx.Connect(ctx, testdb.PostgresURL(t))
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close(ctx)
					var n int
					if err := conn.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
						bus.ApplicationName(service, instance)).Scan(&n); err != nil || n != 1 {
						t.Fatalf("terminated %d listener connections (%v), want 1", n, err)
					}
				},
			}[dialect],
			Inject: map[string]bustest.Injector{"store": func(t testing.TB, channel string, payload []byte, from string) {
				bustest.InjectStore(t, first, service, channel, payload, from)
			}},
		}
	}
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	bustest.Exercise(t, storeBackend(store.SQLite))
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	testdb.PostgresURL(t)
	bustest.Exercise(t, storeBackend(store.Postgres))
}

// A subscriber that holds the SQLite poller up for longer than half the retention is told
// that signals may have been pruned before it read them.
func TestSQLiteLostWhenBehind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t, store.SQLite)
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, bus.Component()).Up(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := bus.NewStore(ctx, s, bus.Config{Service: "svc", Instance: "i0", Retention: 200 * time.Millisecond, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	lost := make(chan struct{}, 1)
	first := true
	b.Subscribe("c", func(m bus.Message) {
		if m.Lost {
			select {
			case lost <- struct{}{}:
			default:
			}
			return
		}
		if first {
			first = false
			time.Sleep(300 * time.Millisecond) // a slow handler stalls the poller
		}
	})
	for range 3 {
		if err := b.Publish(ctx, "c", []byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("no Lost message after the poller fell behind")
	}
}

func TestNewStoreNeedsIdentity(t *testing.T) {
	t.Parallel()
	s := testdb.New(t, store.SQLite).Open(t, nil)
	if _, err := bus.NewStore(context.Background(), s, bus.Config{}); err == nil {
		t.Fatal("bus without service and instance accepted")
	}
}

// NOTIFY channels are database-wide: the same service in two schemas of one database must
// not hear each other.
func TestPostgresSchemasAreSeparate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	testdb.PostgresURL(t)
	var buses []bus.Bus
	for range 2 {
		s := testdb.New(t, store.Postgres).Open(t, nil)
		b, err := bus.NewStore(ctx, s, bus.Config{Service: "svc", Instance: "i", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(ctx) })
		buses = append(buses, b)
	}
	got := make(chan string, 10)
	buses[1].Subscribe("c", func(m bus.Message) { got <- string(m.Payload) })
	if err := buses[0].Publish(ctx, "c", []byte("other schema")); err != nil {
		t.Fatal(err)
	}
	if err := buses[1].Publish(ctx, "c", []byte("own schema")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "own schema" {
			t.Fatalf("received %q from another schema", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("own message not received")
	}
}
