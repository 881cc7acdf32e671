package events

import (
	"context"
	"testing"
)

// A batched read that writes a checkpoint commits without waiting for the WAL flush, and
// one that writes none (it owes none, or its version is stale) leaves the setting alone.
// The statement runs here in an explicit transaction, whose setting the test then reads.
func TestBatchedCheckpointCommitsWithoutFlush(t *testing.T) {
	t.Parallel()
	s := pgLog(t)
	ctx := context.Background()
	q := queriesFor(s)
	if _, err := s.Exec(ctx, q.ensureOffset, s.NowArg(), "svc", "g", 0, int64(0), int64(0)); err != nil {
		t.Fatal(err)
	}
	readBatch := withTopics(s, q.readBatch, "topic", 1)
	for _, c := range []struct {
		owes bool
		want string
	}{{false, "on"}, {true, "off"}, {true, "on"}} { // the third's version (0) is stale
		tx, err := s.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(ctx, readBatch, "svc", "t", []int32{0}, []int64{0}, []int64{0}, []int32{10}, []bool{false},
			[]bool{c.owes}, []int64{0}, []int64{7}, []int64{0}, "g", s.NowArg(), 8)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("owes %v: synchronous_commit %s after the read, want %s", c.owes, got, c.want)
		}
	}
	var id int64
	if err := s.QueryRow(ctx, s.SQL("SELECT id FROM twice_event_offsets WHERE service = 'svc' AND grp = 'g' AND part = 0")).Scan(&id); err != nil || id != 7 {
		t.Fatalf("checkpoint at %d, %v; want 7", id, err)
	}
}
