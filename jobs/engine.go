package jobs

import (
	"context"

	"github.com/twicehq/twice/store"
)

// engine is what the job queue does differently on each dialect: how jobs are inserted in
// bulk and fetched, how a batch of attempts is finished or handed back, how the jobs of
// dead instances are rescued, how wake-ups travel with a transaction, and how rows are
// scanned. [New] picks one for the store (pgEngine in pg.go, sqliteEngine in sqlite.go);
// the rest of the package never asks which dialect it runs on.
type engine interface {
	// write runs insert on the client's own connection and wakes queues once the jobs are
	// committed. atomic says insert runs several statements that must commit together;
	// without it, an engine may run them on the store as they come, and cp can COPY.
	write(ctx context.Context, queues map[string]bool, atomic bool, insert func(q store.Querier, cp copier) error) error
	// signalInTx wakes, through the bus, the queues of jobs written in the caller's
	// transaction tx, which has not committed yet.
	signalInTx(ctx context.Context, tx any, queues map[string]bool)
	// insertBulk inserts jobs without a unique key on q (with COPY when cp is set and the
	// batch is large) and returns their ids in order.
	insertBulk(ctx context.Context, q store.Querier, ps []prepared, cp copier) ([]int64, error)
	// fetch marks up to n available jobs of p's queue running on this instance and
	// returns them.
	fetch(ctx context.Context, p *producer, n int) ([]*Row, error)
	// finish records a batch of finished attempts and releases the keys of the jobs it
	// moved; it returns those jobs, leaving out attempts that are no longer this
	// instance's.
	finish(ctx context.Context, batch []result) ([]finished, error)
	// handBack returns running jobs of this instance to their queue without counting
	// their attempt.
	handBack(ctx context.Context, rows []*Row) error
	// rescue moves the running jobs of dead instances (see [Client.Rescue]), releases
	// their keys and returns them.
	rescue(ctx context.Context) ([]finished, error)
	// scanRow reads one row of [rowCols].
	scanRow(rows store.Row) (*Row, error)
	// scanFetched reads one row of [fetchCols] into r, through s, which the rows of one
	// fetch share.
	scanFetched(rows store.Row, r *Row, s *fetchScan) error
}
