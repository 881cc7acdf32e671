package jobs

import (
	"context"
	"errors"
	"testing"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

type sleeper struct{}

func (sleeper) Kind() string { return "sleeper" }

// migrated opens a store on db with the job queue's tables.
func migrated(t *testing.T, db testdb.DB) *store.Store {
	t.Helper()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// testClient is a client of service on s, as instance i1, that works no queue.
func testClient(t *testing.T, s *store.Store, service string) *Client {
	t.Helper()
	c, err := New(block.Deps{Store: s, Service: service, Instance: "i1", Logger: testdb.Logger(t)}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An attempt whose context was cancelled with ErrCancelled is recorded cancelled only if
// the job's cancel_requested flag is set: the finishing statement decides, so a wrong
// cancellation on the worker's side (once, a forged bus message did it) runs the job again
// instead of losing it.
func TestInterruptedAttemptIsCancelledOnlyWhenRequested(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := migrated(t, db)
		c := testClient(t, s, "svc")
		// run marks a fresh job running on i1, as a fetch would, and finishes its attempt
		// as a worker whose context was cancelled with ErrCancelled.
		run := func(requested bool) *Row {
			t.Helper()
			r, err := c.Enqueue(ctx, sleeper{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Exec(ctx, `UPDATE twice_jobs SET state = 2, owner = 'i1', attempt = 1, cancel_requested = $2 WHERE id = $1`,
				r.ID, requested); err != nil {
				t.Fatal(err)
			}
			row, err := c.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			jctx, cancel := context.WithCancelCause(ctx)
			cancel(ErrCancelled)
			if err := c.finish(ctx, []result{c.outcome(jctx, row, jctx.Err())}); err != nil {
				t.Fatal(err)
			}
			row, err = c.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			return row
		}
		if row := run(false); row.State != Available || row.Attempt != 0 || row.Owner != "" {
			t.Errorf("interrupted without a request: %s, attempt %d, owner %q; want available, attempt 0", row.State, row.Attempt, row.Owner)
		}
		if row := run(true); row.State != Cancelled || row.Attempt != 1 || row.FinishedAt.IsZero() {
			t.Errorf("interrupted on request: %s, attempt %d, finished %v; want cancelled, attempt 1", row.State, row.Attempt, row.FinishedAt)
		}
		// A worker that cancels its own job needs no request.
		r, err := c.Enqueue(ctx, sleeper{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Exec(ctx, `UPDATE twice_jobs SET state = 2, owner = 'i1', attempt = 1 WHERE id = $1`, r.ID); err != nil {
			t.Fatal(err)
		}
		row, err := c.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.finish(ctx, []result{c.outcome(ctx, row, Cancel(errors.New("not wanted")))}); err != nil {
			t.Fatal(err)
		}
		if row, _ := c.Get(ctx, r.ID); row.State != Cancelled {
			t.Errorf("cancelled by its worker: %s", row.State)
		}
	})
}

// EnqueueBatch and EnqueueBatchTx never write into the caller's slice, even where it has
// room past its length (an append of the callback once did).
func TestEnqueueBatchLeavesTheCallersSliceAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testdb.New(t, store.SQLite).Open(t, nil)
	if _, err := store.NewMigrator(s, Component()).Up(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := New(block.Deps{Store: s, Service: "svc", Instance: "i1", Logger: testdb.Logger(t)}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	backing := []Params{{Args: sleeper{}}, {Args: sleeper{}}, {Args: sleeper{}, Opts: &Opts{Queue: "untouched"}}}
	members := backing[:2]
	if _, err := c.EnqueueBatch(ctx, members, Params{Args: sleeper{}, Opts: &Opts{Queue: "callbacks"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.InTx(ctx, func(tx store.Tx) error {
		_, err := c.EnqueueBatchTx(ctx, tx, members, Params{Args: sleeper{}, Opts: &Opts{Queue: "callbacks"}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if backing[2].Opts == nil || backing[2].Opts.Queue != "untouched" {
		t.Fatalf("the element past the caller's slice became %+v", backing[2])
	}
}
