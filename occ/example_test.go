package occ_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/twicehq/twice/occ"
	"github.com/twicehq/twice/store"
)

// Two writers read version 1 of a row; the first update wins and the second gets a
// conflict instead of overwriting it.
func Example() {
	dir, _ := os.MkdirTemp("", "twice-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	s, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "shop.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	_, _ = s.Exec(ctx, "CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, version INTEGER NOT NULL)")
	_, _ = s.Exec(ctx, "INSERT INTO docs VALUES (1, 'draft', 1)")

	versions := occ.New(s)
	key := map[string]any{"id": 1}
	v, err := versions.Update(ctx, occ.UpdateParams{Table: "docs", Key: key, Set: map[string]any{"title": "final"}, Version: 1})
	fmt.Println("first writer:", v, err, "ETag:", occ.ETag(v))

	_, err = versions.Update(ctx, occ.UpdateParams{Table: "docs", Key: key, Set: map[string]any{"title": "other"}, Version: 1})
	fmt.Println("second writer conflicts:", errors.Is(err, occ.ErrConflict))
	fmt.Println(err)
	// Output:
	// first writer: 2 <nil> ETag: "2"
	// second writer conflicts: true
	// occ: docs changed meanwhile: expected version 1, found 2
}
