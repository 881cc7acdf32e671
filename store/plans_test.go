package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// batchLookup takes a batch as arrays, as the event readers' batched read does: PostgreSQL
// keeps planning it anew for small batches unless told to keep the generic plan.
const batchLookup = `SELECT r.a, x.n FROM unnest($1::int[], $2::bigint[]) AS r(a, b)
CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM pg_class WHERE oid::int > r.a LIMIT r.b) c) x
ORDER BY r.a`

// plans returns how often the one connection of s has planned query generically and with
// its values (pg_prepared_statements counts per session).
func plans(t *testing.T, s *store.Store, query string) (generic, custom int64) {
	t.Helper()
	err := s.Pool().QueryRow(context.Background(),
		"SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", query).Scan(&generic, &custom)
	if err != nil {
		t.Fatalf("plans of %q: %v", query, err)
	}
	return generic, custom
}

// The rule of plans.go: on twice's own pool, a statement with an array parameter keeps its
// generic plan from the first call, through Query, QueryRow and Exec, and the setting that
// asks for it does not outlive the statement. In a transaction PostgreSQL's own choice
// stands, which for this statement is a custom plan per call: that is what the rule saves.
func TestBatchStatementsKeepTheirGenericPlan(t *testing.T) {
	db := testdb.New(t, store.Postgres)
	db.DSN += "&pool_max_conns=1" // one connection: pg_prepared_statements is per session
	s := db.Open(t, nil)
	ctx := context.Background()
	var mode string
	if err := s.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	parts, lims := []int32{1, 2, 3}, []int64{2, 3, 4}
	for range 4 {
		rows, err := s.Query(ctx, batchLookup, parts, lims)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for rows.Next() {
			var a, n int64
			if err := rows.Scan(&a, &n); err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
		if err := rows.Err(); err != nil || len(got) != 3 || got[0] != 2 || got[2] != 4 {
			t.Fatalf("rows %v, err %v; want [2 3 4]", got, err)
		}
		var a, n int64
		if err := s.QueryRow(ctx, batchLookup, parts[2:], lims[2:]).Scan(&a, &n); err != nil || n != 4 {
			t.Fatalf("QueryRow: %d, %v", n, err)
		}
		if k, err := s.Exec(ctx, batchLookup, parts, lims); err != nil || k != 3 {
			t.Fatalf("Exec: %d rows, %v", k, err)
		}
	}
	if generic, custom := plans(t, s, batchLookup); custom != 0 || generic != 12 {
		t.Fatalf("the batch statement was planned generically %d times and with its values %d times in 12 calls; want 12 and 0",
			generic, custom)
	}
	var after string
	if err := s.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&after); err != nil || after != mode {
		t.Fatalf("plan_cache_mode after the batch statements: %q (%v); want %q as before", after, err, mode)
	}

	// Outside the rule the server chooses, and chooses a plan per call: the rule is needed.
	inTx := batchLookup + " -- in a transaction"
	err := s.InTx(ctx, func(tx store.Tx) error {
		for range 8 {
			if _, err := tx.Exec(ctx, inTx, parts, lims); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, custom := plans(t, s, inTx); custom < 8 {
		t.Fatalf("in a transaction the statement was planned with its values %d times in 8 calls; the server's own choice was expected to plan each call", custom)
	}

	// A failing batch statement reports its error and leaves the connection usable.
	if _, err := s.Exec(ctx, batchLookup, []int32{1}, []int64{-1}); err == nil {
		t.Fatal("a negative LIMIT ran without an error")
	}
	rows, err := s.Query(ctx, batchLookup, []int32{1, 2}, []int64{1, -1})
	if err == nil {
		for rows.Next() {
		}
		err = rows.Err()
		rows.Close()
	}
	if err == nil {
		t.Fatal("Query with a negative LIMIT reported no error")
	}
	if err := s.QueryRow(ctx, batchLookup, []int32{}, []int64{}).Scan(new(int64), new(int64)); !errors.Is(err, store.ErrNoRows) {
		t.Fatalf("QueryRow of an empty batch: %v, want ErrNoRows", err)
	}
	if err := s.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&after); err != nil || after != mode {
		t.Fatalf("plan_cache_mode after failed batch statements: %q (%v); want %q", after, err, mode)
	}
}
