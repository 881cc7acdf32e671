package events

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// A read that asks whether events are held back looks from the frontier (the oldest
// transaction still running, near the log's end), not from the reader's position: a reader
// far behind would otherwise walk the index over every event after its position, twice
// per read, once for its events and once for the answer. With 20,000 events after the
// position and a read of one, the statement touches a handful of pages; the walk touched
// about a hundred.
func TestHeldBackLookStartsAtTheFrontier(t *testing.T) {
	t.Parallel()
	s := pgLog(t)
	ctx := context.Background()
	if _, err := s.Exec(ctx, s.SQL(`INSERT INTO twice_events (service, topic, key, hash, payload)
		SELECT 'svc', 't', 'k' || i, i, '\x00'::bytea FROM generate_series(1, 20000) i`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, s.SQL("ANALYZE twice_events")); err != nil {
		t.Fatal(err)
	}
	read := withTopics(s, queriesFor(s).read, "topic", 1)
	var plan []struct {
		Plan struct {
			Hit  int `json:"Shared Hit Blocks"`
			Read int `json:"Shared Read Blocks"`
		}
	}
	var raw []byte
	// From the log's start, partition 0 of 8, one event, asking whether any are held back.
	if err := s.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+read,
		"svc", "t", int64(0), int64(0), 8, 0, 1, noSnapshot, true).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
		t.Fatalf("plan %s: %v", raw, err)
	}
	pages := plan[0].Plan.Hit + plan[0].Plan.Read
	t.Logf("a read of one event, 20,000 events after its position: %d pages", pages)
	if pages > 30 {
		t.Fatalf("a read of one event touched %d pages: the look for held-back events walks the log from the position\n%s", pages, raw)
	}
}

// pgLog is a PostgreSQL store, in a schema of t's, with the log's tables.
func pgLog(t *testing.T) *store.Store {
	db := testdb.New(t, store.Postgres)
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
