package instance

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// FencedWriter is the workload "fenced-writes": the leader inserts a row into FenceTable
// every few milliseconds, each checked with twice.Fenced against the token of the term it
// started in. The writer deliberately ignores the end of its term, like a worker that does
// not notice it was paused, so that fencing alone must refuse its stale writes; the refusal
// is reported as "fenced", with the writes the term made.
type FencedWriter struct{}

// Name implements Workload.
func (FencedWriter) Name() string { return "fenced-writes" }

func (FencedWriter) start(_ context.Context, in *env) (func(), error) {
	in.node.Leader().OnElected(func(term context.Context) {
		go fencedWriter(in.node, lease.FromContext(term), in.em)
	})
	return func() {}, nil
}

// fencedWriter writes under l's token until a write is fenced.
func fencedWriter(node *twice.Node, l *lease.Lease, em *emitter) {
	ctx := context.Background()
	var writes writeCount
	for {
		err := node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := twice.Fenced(ctx, tx, l); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+FenceTable+" (service, token, instance) VALUES ($1, $2, $3)", node.Service(), l.Token(), node.ID())
			return err
		})
		switch {
		case errors.Is(err, twice.ErrFenced):
			em.emit(Event{Event: "fenced", Token: l.Token(), Writes: writes.get(), Err: err.Error()})
			return
		case err != nil:
			// A closed store means the node is shutting down.
			if node.Store().Ping(ctx) != nil {
				return
			}
			em.emit(Event{Event: "write_error", Token: l.Token(), Err: err.Error()})
		default:
			writes.add()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type writeCount struct {
	mu sync.Mutex // protects n
	n  int
}

func (w *writeCount) add() {
	w.mu.Lock()
	w.n++
	w.mu.Unlock()
}

func (w *writeCount) get() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// FencedWrite is one accepted write, in commit order.
type FencedWrite struct {
	Token    int64
	Instance string
}

// FencedWrites returns the writes the leaders of service made, in the order they committed:
// on SQLite the id order is the commit order (one writer); on PostgreSQL a write fenced
// by token n commits before token n+1 can be issued, so ids of later terms are higher.
func FencedWrites(ctx context.Context, s *store.Store, service string) ([]FencedWrite, error) {
	rows, err := s.Reader().Query(ctx, "SELECT token, instance FROM "+FenceTable+" WHERE service = $1 ORDER BY id", service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []FencedWrite
	for rows.Next() {
		var w FencedWrite
		if err := rows.Scan(&w.Token, &w.Instance); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}
