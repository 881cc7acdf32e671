package jobs

import (
	"context"
	"database/sql"
	"errors"

	"github.com/twicehq/twice/store"
)

// sqliteEngine runs the job queue on SQLite, which has one writer: a write transaction
// sees everything committed before it and nothing can commit during it, so fetching needs
// no row locks and keys are claimed and released in Go inside the transaction. Looks that
// usually find nothing (an idle queue, no dead instance) are reads first, because the
// write lock is the scarce thing. A batch is one statement per row inside one
// transaction, and wake-ups are rows written in the same transaction as the jobs.
type sqliteEngine struct{ c *Client }

// write always runs in one transaction: the wake-up rows go with the jobs.
func (e sqliteEngine) write(ctx context.Context, queues map[string]bool, _ bool, insert func(store.Querier, copier) error) error {
	c := e.c
	err := c.s.InTx(ctx, func(tx store.Tx) error {
		if err := insert(tx, nil); err != nil {
			return err
		}
		c.publishTx(ctx, tx, queues)
		return nil
	})
	if err != nil {
		return err
	}
	for q := range queues {
		c.wakeLocal(q, false)
	}
	return nil
}

// signalInTx writes the wake-up rows in tx: they are sent if and only if it commits.
func (e sqliteEngine) signalInTx(ctx context.Context, tx any, queues map[string]bool) {
	e.c.publishTx(ctx, tx, queues)
}

// insertBulk inserts row by row: inside one transaction SQLite does that faster than it
// parses one statement with thousands of rows.
func (e sqliteEngine) insertBulk(ctx context.Context, q store.Querier, ps []prepared, _ copier) ([]int64, error) {
	ids := make([]int64, len(ps))
	for i, p := range ps {
		r, err := e.c.insertOne(ctx, q, p)
		if err != nil {
			return nil, err
		}
		ids[i] = r.ID
	}
	return ids, nil
}

// fetch looks with a read first, then in a write transaction lists candidates, claims the
// keys of keyed ones (the first candidate of each key whose key is free) and takes them.
// A limited queue's fetch reads the time once it holds the write lock, its turn, and
// counts and claims at that time (see underTurn).
func (e sqliteEngine) fetch(ctx context.Context, p *producer, n int) ([]*Row, error) {
	c := e.c
	stmt := p.fetchStatement(c.q.sqlite.fetch, c.q.sqlite.fetchLimited)
	var one int
	err := c.s.Reader().QueryRow(ctx, stmt, c.s.NowArg(), c.d.Service, p.queue, 1, c.d.Instance).Scan(&one, new(*string))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rows []*Row
	err = c.s.InTx(ctx, func(tx store.Tx) error {
		take := func(now any, n int, stmt string, only ...any) ([]*Row, error) {
			ids, err := e.claim(ctx, tx, now, stmt, p.queue, n, only...)
			if err != nil || len(ids) == 0 {
				return nil, err
			}
			return c.queryFetched(ctx, tx, c.q.sqlite.take, now, c.d.Service, p.queue, c.s.List(ids), c.d.Instance)
		}
		var err error
		if !p.limited() {
			rows, err = take(c.s.NowArg(), n, stmt)
			return err
		}
		var now store.Time
		if err := tx.QueryRow(ctx, c.q.now, c.s.NowArg()).Scan(&now); err != nil {
			return err
		}
		at := c.s.TimeArg(now.Time)
		rows, err = p.underTurn(ctx, tx, now.Time, n, func(n int, only []int64) ([]*Row, error) {
			if only != nil {
				return take(at, n, c.q.sqlite.fetchOnly, c.s.List(only))
			}
			return take(at, n, c.q.sqlite.fetchLimited)
		})
		return err
	})
	return rows, err
}

// claim lists up to n candidates of queue in tx with the fetch statement stmt (given its
// parameters after the fifth, if any) and returns those it may take: every unkeyed one,
// and for each key the first candidate, if it can claim the key.
func (e sqliteEngine) claim(ctx context.Context, tx store.Tx, now any, stmt, queue string, n int, more ...any) ([]int64, error) {
	c := e.c
	cand, err := tx.Query(ctx, stmt, append([]any{now, c.d.Service, queue, n, c.d.Instance}, more...)...)
	if err != nil {
		return nil, err
	}
	var ids []int64
	claim := map[string]int64{}
	for cand.Next() {
		var id int64
		var key *string
		if err := cand.Scan(&id, &key); err != nil {
			cand.Close()
			return nil, err
		}
		if key == nil {
			ids = append(ids, id)
		} else if _, dup := claim[*key]; !dup {
			claim[*key] = id
		}
	}
	cand.Close()
	if err := cand.Err(); err != nil {
		return nil, err
	}
	for key, id := range claim {
		k, err := tx.Exec(ctx, c.q.sqlite.claimKey, c.d.Service, key, id)
		if err != nil {
			return nil, err
		}
		if k == 1 {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (e sqliteEngine) finish(ctx context.Context, batch []result) ([]finished, error) {
	c := e.c
	var done []finished
	err := c.s.InTx(ctx, func(tx store.Tx) error {
		done = done[:0]
		for _, r := range batch {
			d, err := scanFinished(tx.Query(ctx, c.q.sqlite.finish, c.s.NowArg(), c.d.Service, c.d.Instance,
				r.id, r.attempt, r.state, r.delayMS, r.err, r.undo))
			if err != nil {
				return err
			}
			done = append(done, d...)
		}
		return e.releaseKeys(ctx, tx, done)
	})
	return done, err
}

// releaseKeys deletes the key claims of jobs that finish or rescue moved, in their
// transaction.
func (e sqliteEngine) releaseKeys(ctx context.Context, tx store.Tx, done []finished) error {
	c := e.c
	for _, f := range done {
		if f.key == nil {
			continue
		}
		if _, err := tx.Exec(ctx, c.q.sqlite.releaseKey, c.d.Service, *f.key, f.id); err != nil {
			return err
		}
	}
	return nil
}

func (e sqliteEngine) handBack(ctx context.Context, stuck []*Row) error {
	c := e.c
	return c.s.InTx(ctx, func(tx store.Tx) error {
		for _, r := range stuck {
			if _, err := tx.Exec(ctx, c.q.sqlite.handBack, c.s.NowArg(), c.d.Service, c.d.Instance, r.ID, int32(r.Attempt)); err != nil {
				return err
			}
		}
		return nil
	})
}

// rescue looks with a read first: every instance looks every second, and only a rescue
// takes the write lock.
func (e sqliteEngine) rescue(ctx context.Context) ([]finished, error) {
	c := e.c
	var one int
	err := c.s.Reader().QueryRow(ctx, c.q.sqlite.rescueCheck, c.s.NowArg(), c.d.Service).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var done []finished
	err = c.s.InTx(ctx, func(tx store.Tx) error {
		var err error
		if done, err = c.readRescued(tx.Query(ctx, c.q.sqlite.rescue, c.s.NowArg(), c.d.Service)); err != nil {
			return err
		}
		return e.releaseKeys(ctx, tx, done)
	})
	return done, err
}

// scanRow scans timestamps, integer microseconds on SQLite, through [store.Time].
func (sqliteEngine) scanRow(rows store.Row) (*Row, error) {
	var r Row
	var s rowScan
	var runAt, created, attempted, finishedAt store.Time
	if err := rows.Scan(s.dest(&r, &runAt, &created, &attempted, &finishedAt)...); err != nil {
		return nil, err
	}
	r.ScheduledAt, r.CreatedAt, r.AttemptedAt, r.FinishedAt = runAt.Time, created.Time, attempted.Time, finishedAt.Time
	s.fill(&r)
	return &r, nil
}

func (sqliteEngine) scanFetched(rows store.Row, r *Row, s *fetchScan) error {
	var runAt, created, attempted store.Time
	if err := rows.Scan(s.dest(r, &runAt, &created, &attempted)...); err != nil {
		return err
	}
	r.ScheduledAt, r.CreatedAt, r.AttemptedAt = runAt.Time, created.Time, attempted.Time
	s.fill(r)
	return nil
}
