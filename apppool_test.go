package twice_test

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/occ"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

type appJob struct{ N int }

func (appJob) Kind() string { return "apppool" }

// Every Tx operation joins a transaction the application opened on its own pool, whose
// search_path does not name Config.Schema (here a mixed-case one): its effects land in
// twice's schema and the node sees them.
func TestTxOperationsOnTheApplicationsOwnPool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t, store.Postgres)
	db := base.InSchema(t, "App_"+base.Schema)
	n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t),
		HeartbeatInterval: 50 * time.Millisecond, LeaderPoll: 20 * time.Millisecond, Jobs: jobs.Config{Poll: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(ctx) })

	// The application's own handles, with the DSN's default search_path.
	pool, err := pgxpool.New(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	sqlDB := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = sqlDB.Close() })
	var path string
	if err := pool.QueryRow(ctx, "SHOW search_path").Scan(&path); err != nil || strings.Contains(path, db.Schema) {
		t.Fatalf("the application's search_path %q (%v) must not name %s", path, err, db.Schema)
	}
	inPgx := func(t *testing.T, fn func(tx pgx.Tx) error) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, fn); err != nil {
			t.Fatal(err)
		}
	}
	inSQL := func(t *testing.T, fn func(tx *sql.Tx) error) {
		t.Helper()
		tx, err := sqlDB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var ran atomic.Int32
	if err := jobs.Register(n.Jobs(), jobs.WorkFunc[appJob](func(context.Context, *jobs.Job[appJob]) error {
		ran.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Run("Jobs", func(t *testing.T) {
		var ids []int64
		inPgx(t, func(tx pgx.Tx) error {
			r, err := n.Jobs().EnqueueTx(ctx, tx, appJob{1}, nil)
			ids = append(ids, r.ID)
			return err
		})
		many := make([]jobs.Params, 150) // enough for COPY
		for i := range many {
			many[i] = jobs.Params{Args: appJob{i}}
		}
		inPgx(t, func(tx pgx.Tx) error {
			rs, err := n.Jobs().EnqueueManyTx(ctx, tx, many)
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			return err
		})
		inSQL(t, func(tx *sql.Tx) error {
			rs, err := n.Jobs().EnqueueManyTx(ctx, tx, many[:2])
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			return err
		})
		inSQL(t, func(tx *sql.Tx) error {
			_, err := n.Jobs().EnqueueBatchTx(ctx, tx, many[:2], jobs.Params{Args: appJob{-1}})
			return err
		})
		testnode.Eventually(t, 20*time.Second, "every job run", func() bool { return ran.Load() == int32(len(ids)+3) })
		for _, id := range ids {
			if row, err := n.Jobs().Get(ctx, id); err != nil || row.State != jobs.Completed {
				t.Fatalf("job %d: %+v, %v", id, row, err)
			}
		}

		var later int64
		inSQL(t, func(tx *sql.Tx) error {
			r, err := n.Jobs().EnqueueTx(ctx, tx, appJob{2}, &jobs.Opts{Delay: time.Hour})
			later = r.ID
			return err
		})
		inPgx(t, func(tx pgx.Tx) error { return n.Jobs().CancelTx(ctx, tx, later) })
		if row, err := n.Jobs().Get(ctx, later); err != nil || row.State != jobs.Cancelled {
			t.Fatalf("after CancelTx: %+v, %v", row, err)
		}
		inSQL(t, func(tx *sql.Tx) error { return n.Jobs().RetryTx(ctx, tx, later) })
		testnode.Eventually(t, 20*time.Second, "the retried job run", func() bool {
			row, err := n.Jobs().Get(ctx, later)
			return err == nil && row.State == jobs.Completed
		})
	})

	t.Run("Events", func(t *testing.T) {
		var handled atomic.Int32
		c, err := n.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"apppool"},
			Handle: func(context.Context, events.Event) error { handled.Add(1); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var first int64
		inPgx(t, func(tx pgx.Tx) error {
			ids, err := n.Events().PublishTx(ctx, tx, events.Message{Topic: "apppool", Payload: []byte("a")})
			first = ids[0]
			return err
		})
		inSQL(t, func(tx *sql.Tx) error {
			_, err := n.Events().PublishTx(ctx, tx, events.Message{Topic: "apppool", Payload: []byte("b")})
			return err
		})
		testnode.Eventually(t, 20*time.Second, "both events handled", func() bool { return handled.Load() == 2 })
		inSQL(t, func(tx *sql.Tx) error { return n.Events().ReplayTx(ctx, tx, "g", &events.ReplayOpts{FromID: first}) })
		testnode.Eventually(t, 20*time.Second, "both events handled again", func() bool { return handled.Load() == 4 })

		inSQL(t, func(tx *sql.Tx) error {
			_, err := n.Events().AppendTx(ctx, tx, "order-1", 0, events.Message{Topic: "orders", Payload: []byte("created")})
			return err
		})
		inPgx(t, func(tx pgx.Tx) error {
			_, err := n.Events().AppendTx(ctx, tx, "order-1", 0, events.Message{Topic: "orders", Payload: []byte("again")})
			var conflict *events.ConflictError
			if !errors.As(err, &conflict) {
				t.Errorf("a stale AppendTx = %v, want a ConflictError", err)
			}
			return nil
		})
		inPgx(t, func(tx pgx.Tx) error {
			evs, err := n.Events().LoadTx(ctx, tx, "order-1", nil)
			if err == nil && (len(evs) != 1 || string(evs[0].Payload) != "created") {
				t.Errorf("LoadTx = %+v", evs)
			}
			return err
		})
		if evs, err := n.Events().Load(ctx, "order-1", nil); err != nil || len(evs) != 1 {
			t.Fatalf("the node loads %+v, %v", evs, err)
		}
	})

	t.Run("Fenced", func(t *testing.T) {
		testnode.Eventually(t, 20*time.Second, "the node leads", n.IsLeader)
		inPgx(t, func(tx pgx.Tx) error { return twice.Fenced(ctx, tx, n.Leader().Lease()) })
		k, err := n.Locks().Acquire(ctx, "apppool", nil)
		if err != nil {
			t.Fatal(err)
		}
		inSQL(t, func(tx *sql.Tx) error { return k.Check(ctx, tx) })
		inSQL(t, func(tx *sql.Tx) error {
			return n.Leases().CheckToken(ctx, tx, "lock:apppool", k.Token())
		})
		if err := k.Release(ctx); err != nil {
			t.Fatal(err)
		}
		inPgx(t, func(tx pgx.Tx) error {
			if err := k.Check(ctx, tx); !errors.Is(err, twice.ErrFenced) {
				t.Errorf("Check of a released lock = %v, want ErrFenced", err)
			}
			return nil
		})
	})

	t.Run("Settings", func(t *testing.T) {
		inPgx(t, func(tx pgx.Tx) error {
			_, err := n.Settings().SetTx(ctx, tx, "limit", 7, nil)
			return err
		})
		testnode.Eventually(t, 20*time.Second, "the node reads the setting", func() bool { return n.Settings().Int("limit", 0) == 7 })
		inSQL(t, func(tx *sql.Tx) error {
			_, err := n.Settings().DeleteTx(ctx, tx, "limit", nil)
			return err
		})
		testnode.Eventually(t, 20*time.Second, "the node sees the deletion", func() bool { _, ok := n.Settings().Get("limit"); return !ok })
	})

	t.Run("Sessions", func(t *testing.T) {
		h := n.Sessions().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := session.SetUser(r.Context(), "ada"); err != nil {
				t.Error(err)
			}
		}))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		inSQL(t, func(tx *sql.Tx) error {
			k, err := n.Sessions().DestroyUserTx(ctx, tx, "ada")
			if err == nil && k != 1 {
				t.Errorf("DestroyUserTx destroyed %d sessions, want 1", k)
			}
			return err
		})
		if l, err := n.Sessions().List(ctx, "ada"); err != nil || len(l) != 0 {
			t.Fatalf("sessions left: %+v, %v", l, err)
		}
	})

	t.Run("Idempotency", func(t *testing.T) {
		p := idempotency.Params{Scope: "s", Key: "refund-1", Fingerprint: []byte("r1")}
		inPgx(t, func(tx pgx.Tx) error {
			_, err := n.Idempotency().DoTx(ctx, tx, p, func(context.Context) (*idempotency.Response, error) {
				return &idempotency.Response{Status: 201, Body: []byte("done")}, nil
			})
			return err
		})
		res, err := n.Idempotency().Do(ctx, p, func(context.Context, store.Tx) (*idempotency.Response, error) {
			t.Error("the key's effect ran twice")
			return nil, nil
		})
		if err != nil || !res.Replayed || string(res.Body) != "done" {
			t.Fatalf("Do after DoTx: %+v, %v", res, err)
		}
	})

	t.Run("Versions", func(t *testing.T) {
		table := base.Schema + ".accounts" // the application's table, outside twice's schema
		if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (id int PRIMARY KEY, balance int, version bigint NOT NULL DEFAULT 1)"); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO "+table+" (id, balance) VALUES (1, 10)"); err != nil {
			t.Fatal(err)
		}
		inSQL(t, func(tx *sql.Tx) error {
			_, err := n.Versions().UpdateTx(ctx, tx, occ.UpdateParams{Table: table, Key: map[string]any{"id": 1},
				Set: map[string]any{"balance": 20}, Version: 1})
			return err
		})
	})

	t.Run("CacheAndBus", func(t *testing.T) {
		var loads atomic.Int32
		c, err := cache.New(n.Caches(), "apppool", cache.Config[string, int32]{
			Load: func(context.Context, string) (int32, error) { return loads.Add(1), nil }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		inPgx(t, func(tx pgx.Tx) error { return c.InvalidateTx(ctx, tx, "k") })
		testnode.Eventually(t, 20*time.Second, "the invalidation applied", func() bool { v, err := c.Get(ctx, "k"); return err == nil && v == 2 })

		got := make(chan string, 1)
		n.Bus().Subscribe("apppool", func(m bus.Message) { got <- string(m.Payload) })
		inSQL(t, func(tx *sql.Tx) error { return n.Bus().PublishTx(ctx, tx, "apppool", []byte("hi")) })
		select {
		case p := <-got:
			if p != "hi" {
				t.Fatalf("received %q", p)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("PublishTx's signal never arrived")
		}
	})
}
