package main

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// bareEvents is the publishing side's physical limit here: each publisher runs BEGIN, an
// INSERT of one row RETURNING its id, and COMMIT, on a pgx pool of one connection per
// publisher, into a table with twice_events' columns, defaults and indexes. No library,
// no consumer, no wake-up.
type bareEvents struct{}

func (bareEvents) name() (string, string, string) {
	return "bare", "INSERT+COMMIT", "BEGIN; INSERT … RETURNING id; COMMIT through pgx, into a copy of twice_events' table and indexes"
}

const bareTable = `
CREATE TABLE bare_events (
	id      bigserial   PRIMARY KEY,
	service text        NOT NULL,
	topic   text        NOT NULL,
	key     text        NOT NULL DEFAULT '',
	hash    integer     NOT NULL,
	payload bytea       NOT NULL,
	headers bytea,
	stream  text,
	version bigint,
	xid     bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
	at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bare_events_read ON bare_events (service, topic, xid, id);
CREATE INDEX bare_events_at ON bare_events (service, at);
CREATE UNIQUE INDEX bare_events_stream ON bare_events (service, stream, version) WHERE stream IS NOT NULL`

const bareInsert = `INSERT INTO bare_events (service, topic, key, hash, payload, headers, stream, version, at)
VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL, now()) RETURNING id`

func (bareEvents) throughput(ctx context.Context, dsn string, n, publishers int) (time.Duration, time.Duration, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return 0, 0, err
	}
	cfg.MaxConns = int32(publishers)
	pl, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer pl.Close()
	if _, err := pl.Exec(ctx, bareTable); err != nil {
		return 0, 0, err
	}
	pubTime, err := publishAll(ctx, n, publishers, func(i int) error {
		tx, err := pl.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) // after the commit it does nothing
		key := strconv.Itoa(i % 1000)
		var id int64
		if err := tx.QueryRow(ctx, bareInsert, "bench", "bench.throughput", key, int32(i%1000), []byte{}).Scan(&id); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
	return pubTime, 0, err
}
