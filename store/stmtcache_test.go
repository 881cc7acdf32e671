package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func openScratch(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The writer pool has one connection: a statement first seen inside a transaction must be
// prepared without waiting for that transaction's own connection, and then serve later
// transactions prepared.
func TestStmtCachePreparesBehindATransaction(t *testing.T) {
	ctx := context.Background()
	s := openScratch(t)
	defer s.Close()
	if _, err := s.Exec(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const insert = "INSERT INTO t (v) VALUES ($1)"
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; s.writerStmts.get(insert) == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the statement was never prepared")
		}
		err := s.InTx(ctx, func(tx Tx) error {
			_, err := tx.Exec(ctx, insert, i)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	// Prepared now: inside a transaction, outside one, and on rollback.
	err := s.InTx(ctx, func(tx Tx) error {
		for i := range 100 {
			if _, err := tx.Exec(ctx, insert, -i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, insert, 7); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, insert, 1000); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var n, big int
	if err := s.Reader().QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE v = 1000) FROM t WHERE v <= 0 OR v = 7 OR v = 1000").Scan(&n, &big); err != nil {
		t.Fatal(err)
	}
	if n != 101+1 || big != 0 { // 100 negatives, 0 from the first round, and 7
		t.Fatalf("rows %d, rolled-back rows %d", n, big)
	}
}

func TestStmtCacheSkipsScriptsAndStopsAtItsBound(t *testing.T) {
	s := openScratch(t)
	defer s.Close()
	c := s.readerStmts
	const script = "SELECT 1; SELECT 2"
	for range 10 {
		if c.get(script) != nil {
			t.Fatal("a script was prepared")
		}
	}
	c.mu.Lock()
	if c.pending[script] || c.stmts[script] != nil {
		c.mu.Unlock()
		t.Fatal("a script was asked for")
	}
	for i := range maxCachedStmts {
		c.pending[fmt.Sprintf("SELECT %d AS filler", i)] = true
	}
	c.mu.Unlock()
	if c.get("SELECT 42") != nil {
		t.Fatal("a full cache returned a statement")
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.pending["SELECT 42"] {
		t.Fatal("a full cache took one more")
	}
}

// A statement that fails to prepare runs unprepared, and the caller gets the error.
func TestStmtCacheBadStatement(t *testing.T) {
	ctx := context.Background()
	s := openScratch(t)
	defer s.Close()
	for range 20 {
		if _, err := s.Exec(ctx, "INSERT INTO missing VALUES (1)"); err == nil {
			t.Fatal("no error for a missing table")
		}
		time.Sleep(time.Millisecond)
	}
	if s.writerStmts.get("INSERT INTO missing VALUES (1)") != nil {
		t.Fatal("a statement that cannot be prepared was cached")
	}
}
