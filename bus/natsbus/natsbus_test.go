package natsbus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/bustest"
	"github.com/twicehq/twice/bus/natsbus"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend runs every instance's bus through a proxy of its own, so Disconnect cuts exactly
// one instance off the server; PublishTx goes through a store of dialect.
func backend(dialect store.Dialect) func(t *testing.T) bustest.Backend {
	return func(t *testing.T) bustest.Backend {
		testnats.URL(t)
		ctx := context.Background()
		db := testdb.New(t, dialect)
		first := db.Open(t, nil)
		if _, err := store.NewMigrator(first, bus.Component()).Up(ctx); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		service := "svc-" + hex.EncodeToString(b)
		var mu sync.Mutex
		proxies := map[string]*testnats.Proxy{}
		return bustest.Backend{
			Service: service,
			Open: func(t *testing.T, instance string, signer *bus.Signer) bus.Bus {
				p := testnats.NewProxy(t)
				mu.Lock()
				proxies[instance] = p
				mu.Unlock()
				bb, err := natsbus.New(ctx, natsbus.Config{URL: p.URL(), Service: service, Instance: instance,
					Store: db.Open(t, nil), Signer: signer, Logger: testdb.Logger(t)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = bb.Close(ctx) })
				return bb
			},
			Begin: bustest.BeginStore(first),
			Disconnect: func(t *testing.T, instance string) {
				mu.Lock()
				defer mu.Unlock()
				proxies[instance].Cut()
			},
			Inject: map[string]bustest.Injector{
				"nats": func(t testing.TB, channel string, payload []byte, from string) {
					bustest.InjectNATS(t, testnats.URL(t), service, channel, payload, from)
				},
				// PublishTx messages come through the store, and so can an outsider's.
				"store": func(t testing.TB, channel string, payload []byte, from string) {
					bustest.InjectStore(t, first, natsbus.TxService(service), channel, payload, from)
				},
			},
		}
	}
}

func TestNATSWithSQLite(t *testing.T) {
	t.Parallel()
	bustest.Exercise(t, backend(store.SQLite))
}

func TestNATSWithPostgres(t *testing.T) {
	t.Parallel()
	testdb.PostgresURL(t)
	bustest.Exercise(t, backend(store.Postgres))
}

func TestConfigRequired(t *testing.T) {
	t.Parallel()
	if _, err := natsbus.New(context.Background(), natsbus.Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
}

func TestSubjectIsOneTokenPerName(t *testing.T) {
	t.Parallel()
	got := natsbus.Subject("shop.eu", "orders.*> x")
	if got != "twice.bus.c2hvcC5ldQ.b3JkZXJzLio-IHg" {
		t.Fatalf("Subject = %q", got)
	}
}
