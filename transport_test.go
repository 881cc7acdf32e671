package twice_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

func TestConfigBusMustBeNATS(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"redis://x:1", "nats://", "127.0.0.1:4222", "nats://a:1,http://b:2"} {
		_, err := twice.Open(context.Background(), twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "x.db"), Name: "svc", Bus: bad})
		if err == nil || !strings.Contains(err.Error(), "Bus") {
			t.Errorf("Bus %q: %v", bad, err)
		}
	}
}

// A bad Bus is named in Open's error with its credentials masked, whatever is wrong with it.
func TestConfigBusErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"redis://me:Hunter2x@h:1", "nats://me:Hunter2/x@h", "nats://me:Hunter2@x@h", "nats://Hunter2x@h,127.0.0.1"} {
		_, err := twice.Open(context.Background(), twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "x.db"), Name: "svc", Bus: bad})
		if err == nil || !strings.Contains(err.Error(), "Bus") || strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("Bus %q: %v", bad, err)
		}
	}
}

// Two nodes on NATS hand leadership over through the NATS bus.
func TestNodeOnNATS(t *testing.T) {
	t.Parallel()
	url := testnats.URL(t)
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		open := func() *twice.Node {
			return testnode.Open(t, db, "svc", twice.Config{Bus: url, LeaderPoll: time.Second})
		}
		a := open()
		testnode.Eventually(t, 20*time.Second, "the first node leads", a.IsLeader)
		b := open()
		elected := make(chan struct{})
		b.Leader().OnElected(func(ctx context.Context) { close(elected); <-ctx.Done() })
		start := time.Now()
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-elected:
			t.Logf("handover over NATS in %v", time.Since(start))
		case <-time.After(20 * time.Second):
			t.Fatal("no handover")
		}
	})
}

// A bus that cannot start fails Open with an error naming it; it must not panic (a typed
// nil *Bus inside the bus.Bus interface was closed during the cleanup).
func TestOpenFailsWhenTheBusCannotStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("NATSDown", func(t *testing.T) {
		t.Parallel()
		n, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "x.db"), Name: "svc",
			Bus: "nats://127.0.0.1:1", Logger: testdb.Logger(t)})
		if err == nil {
			_ = n.Close(ctx)
			t.Fatal("Open succeeded with NATS down")
		}
		t.Log(err)
		if !strings.Contains(err.Error(), "bus") || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("error does not say the bus failed, or where: %v", err)
		}
	})
	t.Run("PostgresListenerRefused", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, store.Postgres)
		// A role allowed two connections: the pool's and the control pool's work, the
		// bus's listener connection is refused.
		db = db.LimitedRole(t, 2)
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "svc", Logger: testdb.Logger(t)})
		if err == nil {
			_ = n.Close(ctx)
			t.Fatal("Open succeeded though the listener connection is refused")
		}
		t.Log(err)
		if !strings.Contains(err.Error(), "bus") || !strings.Contains(err.Error(), "too many connections") {
			t.Errorf("error does not say the bus failed, and why: %v", err)
		}
	})
}
