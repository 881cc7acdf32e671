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

func TestSQLite(t *testing.T) {
	t.Parallel()
	Exercise(t, store.SQLite)
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	testdb.PostgresURL(t)
	Exercise(t, store.Postgres)
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The events suite again, with instances signalling each other over NATS.
func TestEventsOverNATS(t *testing.T) {
	t.Parallel()
	cfg := fast
	cfg.Bus = testnats.URL(t)
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		eventsSuiteWith(t, db.Dialect, cfg)
	})
}

// The cache and settings suites again, with instances signalling each other over NATS.
func TestCacheAndSettingsOverNATS(t *testing.T) {
	t.Parallel()
	cfg := calm
	cfg.Bus = testnats.URL(t)
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		t.Run("Cache", func(t *testing.T) { cachesWith(t, db.Dialect, cfg) })
		t.Run("Settings", func(t *testing.T) { settingsWith(t, db.Dialect, cfg) })
	})
}

// The forged-message tests again, with instances on NATS and the forgeries published there.
func TestForgedOverNATS(t *testing.T) {
	t.Parallel()
	url := testnats.URL(t)
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		forgedWith(t, db.Dialect, twice.Config{Bus: url}, func(t *testing.T, n *twice.Node, channel string, payload []byte) {
			bustest.InjectNATS(t, url, n.Service(), channel, payload, "intruder")
		})
	})
}

// The forged-message tests again, with a cluster secret: the bus drops the forgeries.
func TestForgedWithClusterSecret(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		forgedWith(t, db.Dialect, twice.Config{ClusterSecret: bustest.Secret()}, injectStore)
	})
}
