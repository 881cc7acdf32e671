package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// floorName is the floor's name in the table and in JSON.
const floorName = "floor"

// floorLatency measures what any queue that commits both the enqueue and the claim pays on
// this server, at the latency runs' rate and with their warm-up: one autocommitted INSERT
// of a row (the enqueue), then, handed to a second goroutine on a second connection, one
// autocommitted UPDATE of that row by its id (the claim), timed from before the INSERT to
// the UPDATE's return. Nothing wakes, polls or searches in between: a queue's latency run
// adds those to the same two commits, so the floor's p99 is where that queue's p99 can at
// best be on this machine.
func floorLatency(ctx context.Context, dsn, schema string, n, rate int) ([]timed, error) {
	enqueuer, err := floorConn(ctx, dsn, schema)
	if err != nil {
		return nil, err
	}
	defer enqueuer.Close(context.WithoutCancel(ctx))
	claimer, err := floorConn(ctx, dsn, schema)
	if err != nil {
		return nil, err
	}
	defer claimer.Close(context.WithoutCancel(ctx))
	if _, err := enqueuer.Exec(ctx, "CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state smallint NOT NULL DEFAULT 0, args jsonb NOT NULL)"); err != nil {
		return nil, err
	}
	type enqueued struct {
		id   int64
		sent int64
	}
	var rec latencyRecorder
	work := make(chan enqueued, n)
	claimed := make(chan error, 1)
	go func() {
		for e := range work {
			tag, err := claimer.Exec(ctx, "UPDATE floor_jobs SET state = 1 WHERE id = $1 AND state = 0", e.id)
			if err == nil && tag.RowsAffected() != 1 {
				err = fmt.Errorf("claim of row %d updated %d rows", e.id, tag.RowsAffected())
			}
			if err != nil {
				claimed <- err
				return
			}
			rec.add(e.sent)
		}
		claimed <- nil
	}()
	err = pace(ctx, n, rate, func(int) error {
		sent := time.Now().UnixNano()
		var id int64
		if err := enqueuer.QueryRow(ctx, "INSERT INTO floor_jobs (args) VALUES ($1) RETURNING id", []byte(`{"sent":0}`)).Scan(&id); err != nil {
			return err
		}
		rec.sent(sent)
		work <- enqueued{id: id, sent: sent}
		return nil
	})
	close(work)
	if cerr := <-claimed; cerr != nil {
		return nil, errors.Join(err, fmt.Errorf("floor: %w", cerr))
	}
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	return rec.timed(), nil
}

// floorConn is a bare connection, not a pool (see pool): the floor is what the two commits
// cost alone. A pool's acquire and release measured 6 to 10 µs at the p50, and a one-row
// INSERT at 100/s the same through either, so the choice does not move the figure.
func floorConn(ctx context.Context, dsn, schema string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["search_path"] = schema
	return pgx.ConnectConfig(ctx, cfg)
}
