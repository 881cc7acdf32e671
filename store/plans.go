package store

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A statement that takes a batch as arrays ($4::bigint[], unnested or compared with ANY)
// is planned once per connection, not once per call. PostgreSQL plans a prepared statement
// for its first five calls with the values bound, then keeps a generic plan only if that
// costs no more than the custom ones did; for an array parameter it cannot know the length
// and guesses, so a batch smaller than the guess keeps the custom plans, planned again on
// every call. For the event readers' batched read that planning took 1.6 times as long as
// running the statement (pg_stat_statements with track_planning, `bench events`), and the
// custom plan of such a statement is the generic one anyway: the batch is looked up by
// its index whatever its length.
//
// On twice's own pool (not in a transaction, not on a caller's connection) such a statement
// goes in one round trip with set_config('plan_cache_mode', 'force_generic_plan', true)
// ahead of it: the setting lasts until the implicit transaction of the two ends, with the
// statement, so nothing else on the connection is planned differently.

// arrayParam matches a parameter cast to an array type, as twice writes a batch's.
var arrayParam = regexp.MustCompile(`\$[0-9]+::[a-z][a-z0-9_ ]*\[\]`)

// takesBatch reports whether query has an array parameter. Most statements have no "[]"
// at all, and that look is all they cost; nothing is kept per text, so a caller's many
// different texts cannot grow anything.
func takesBatch(query string) bool {
	return strings.Contains(query, "[]") && arrayParam.MatchString(query)
}

// setGeneric makes the statement after it, in the same implicit transaction, use the
// generic plan.
const setGeneric = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`

// batcher is what can send a pipeline: the pool, a connection, a transaction.
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// sendGeneric sends setGeneric and query in one round trip and returns the results with the
// first consumed; the caller reads query's result and closes them.
func sendGeneric(ctx context.Context, b batcher, query string, args []any) (pgx.BatchResults, error) {
	var batch pgx.Batch
	batch.Queue(setGeneric)
	batch.Queue(query, args...)
	br := b.SendBatch(ctx, &batch)
	if _, err := br.Exec(); err != nil {
		return nil, errors.Join(err, br.Close())
	}
	return br, nil
}

// genericRows are a batched statement's rows: once they end, the batch is closed, which
// returns the connection and reports the implicit transaction's end.
type genericRows struct {
	pgx.Rows
	br     pgx.BatchResults
	closed bool
	err    error
}

func (r *genericRows) Next() bool {
	if r.closed {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *genericRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = errors.Join(r.Rows.Err(), r.br.Close())
}

func (r *genericRows) Err() error {
	if r.closed {
		return r.err
	}
	return r.Rows.Err()
}

// genericRow is a batched statement's single row; Scan closes the batch.
type genericRow struct {
	br  pgx.BatchResults
	err error
}

func (r genericRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	err := r.br.QueryRow().Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}
