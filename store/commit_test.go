package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// A COMMIT whose ctx ends while the server runs it is seen through: the caller learns
// whether the transaction committed, and never gets ctx's error for a transaction that
// did. A deferred trigger makes the COMMIT itself take half a second. (SQLite's commit
// does not wait on ctx: database/sql finishes one that has begun.)
func TestCommitOutlivesItsContext(t *testing.T) {
	t.Parallel()
	s := testdb.New(t, store.Postgres).Open(t, nil)
	ctx := context.Background()
	for _, q := range []string{
		"CREATE TABLE twice_test_commit (n integer)",
		"CREATE FUNCTION twice_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$",
		"CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON twice_test_commit DEFERRABLE INITIALLY DEFERRED " +
			"FOR EACH ROW EXECUTE FUNCTION twice_test_slow()",
	} {
		if _, err := s.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	tctx, cancel := context.WithCancel(ctx)
	tx, err := s.Begin(tctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(tctx, "INSERT INTO twice_test_commit (n) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel) // within the COMMIT's half second
	if err := tx.Commit(tctx); err != nil {
		t.Fatalf("commit: %v; want the server's answer, which is that it committed", err)
	}
	var n int
	if err := s.QueryRow(ctx, "SELECT count(*) FROM twice_test_commit").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after the commit: %d, %v; want 1", n, err)
	}

	// A ctx that ended before the COMMIT stops it from being sent.
	tx, err = s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO twice_test_commit (n) VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(tctx); err == nil {
		t.Fatal("commit with an ended ctx succeeded; want ctx's error")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.QueryRow(ctx, "SELECT count(*) FROM twice_test_commit").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after the refused commit: %d, %v; want 1", n, err)
	}
}
