package conformance

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus/bustest"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	Exercise(t, Backend{Dialect: store.SQLite})
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	testdb.PostgresURL(t)
	Exercise(t, Backend{Dialect: store.Postgres})
}

// The areas that rest on the bus again, with instances signalling each other over NATS
// and forgeries published there.
func TestNATS(t *testing.T) {
	t.Parallel()
	url := testnats.URL(t)
	eachDialect(t, func(t *testing.T, d store.Dialect) {
		ExerciseBus(t, Backend{Dialect: d, Bus: url, Forge: func(t *testing.T, n *twice.Node, channel string, payload []byte) {
			bustest.InjectNATS(t, url, n.Service(), channel, payload, "intruder")
		}})
	})
}

// The forged-message tests again, with a cluster secret: the bus drops the forgeries. And
// the real-time hub, whose messages then travel on the bus themselves.
func TestClusterSecret(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d store.Dialect) {
		b := Backend{Dialect: d, ClusterSecret: bustest.Secret()}
		exerciseForged(t, b)
		exerciseRealtime(t, b)
	})
}

// eachDialect runs fn as a parallel subtest per database, PostgreSQL only when
// TWICE_TEST_POSTGRES_URL is set.
func eachDialect(t *testing.T, fn func(t *testing.T, d store.Dialect)) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			if d == store.Postgres {
				testdb.PostgresURL(t)
			}
			fn(t, d)
		})
	}
}
