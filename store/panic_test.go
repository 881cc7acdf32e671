package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// A panic inside InTx must roll the transaction back and reach the caller unchanged: a
// leaked transaction keeps a PostgreSQL connection "idle in transaction" (and Close
// waiting for it forever) and keeps SQLite's only write lock for every process on the file.
func TestInTxPanicRollsBack(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		dsn := db.DSN
		if db.Dialect == store.Postgres {
			// Two connections: two leaked transactions would leave none.
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + "pool_max_conns=2"
		}
		s, err := store.Open(ctx, dsn, &store.Options{Schema: db.Schema})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Exec(ctx, "CREATE TABLE twice_test_panic (n integer)"); err != nil {
			t.Fatal(err)
		}
		// Bounded only so that a regression fails instead of hanging the suite.
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		for i := range 5 {
			var err error
			got := func() (p any) {
				defer func() { p = recover() }()
				err = s.InTx(wctx, func(tx store.Tx) error {
					if _, err := tx.Exec(wctx, "INSERT INTO twice_test_panic (n) VALUES ($1)", i); err != nil {
						t.Error(err)
					}
					panic("boom")
				})
				return nil
			}()
			if err != nil {
				t.Fatalf("InTx %d: %v (the transactions of earlier panics leaked their connections)", i, err)
			}
			if got != "boom" {
				t.Fatalf("InTx recovered %v, want the handler's panic to reach the caller", got)
			}
		}
		var n int
		err = s.InTx(wctx, func(tx store.Tx) error {
			return tx.QueryRow(wctx, "SELECT count(*) FROM twice_test_panic").Scan(&n)
		})
		if err != nil {
			t.Fatalf("InTx after panics: %v (the panicking transactions leaked their connections)", err)
		}
		if n != 0 {
			t.Fatalf("%d rows of panicking transactions were committed, want 0", n)
		}
		closed := make(chan struct{})
		go func() {
			s.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-wctx.Done():
			t.Fatal("Close did not return: a connection is still held by a leaked transaction")
		}
	})
}
