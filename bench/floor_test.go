package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The floor's run times every pair of commits, the first on its own and both together.
func TestFloor(t *testing.T) {
	dsn := testDSN(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var lat []timed
	_, err = withSchema(ctx, admin, func(schema string) (d time.Duration, err error) {
		lat, err = floorLatency(ctx, dsn, schema, 30, 200)
		return 0, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 30 {
		t.Fatalf("%d pairs timed, want 30", len(lat))
	}
	for _, j := range lat {
		if j.returned <= 0 || j.d < j.returned {
			t.Fatalf("a pair took %v, its first commit %v: want the first positive and within the pair", j.d, j.returned)
		}
	}
}

// testDSN is the PostgreSQL database of the tests that need one; they skip without it.
func testDSN(t *testing.T) string {
	dsn := os.Getenv("TWICE_TEST_POSTGRES_URL")
	if dsn == "" {
		t.Skip("TWICE_TEST_POSTGRES_URL is not set")
	}
	return dsn
}
