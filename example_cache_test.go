package twice_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
)

// A coherent cache: read through a loader, invalidate in the transaction that changes the
// data. Every instance drops the key once the transaction commits; this one at once.
func ExampleNode_Caches() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	db := node.Store()
	if _, err := db.Exec(ctx, "CREATE TABLE prices (sku TEXT PRIMARY KEY, cents INTEGER NOT NULL)"); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(ctx, "INSERT INTO prices VALUES ('tea', 450)"); err != nil {
		log.Fatal(err)
	}

	prices, err := cache.New(node.Caches(), "prices", cache.Config[string, int]{
		Load: func(ctx context.Context, sku string) (int, error) {
			var cents int
			err := db.Reader().QueryRow(ctx, "SELECT cents FROM prices WHERE sku = $1", sku).Scan(&cents)
			return cents, err
		},
		TTL: 10 * time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	before, _ := prices.Get(ctx, "tea") // loaded
	prices.Get(ctx, "tea")              // cached

	err = db.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE prices SET cents = 500 WHERE sku = 'tea'"); err != nil {
			return err
		}
		return prices.InvalidateTx(ctx, tx, "tea") // sent to every instance on commit
	})
	if err != nil {
		log.Fatal(err)
	}
	after, _ := prices.Get(ctx, "tea")
	st := prices.Stats()
	fmt.Println("before:", before, "after:", after)
	fmt.Println("hits:", st.Hits, "misses:", st.Misses, "loads:", st.Loads)
	// Output:
	// before: 450 after: 500
	// hits: 1 misses: 2 loads: 2
}

// Cluster-wide settings: every instance reads them from memory and sees changes within
// milliseconds. The same settings are read and changed with `twice config`.
func ExampleNode_Settings() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	cfg := node.Settings()

	changed := make(chan settings.Setting, 1)
	defer cfg.Watch("checkout.enabled", func(s settings.Setting) { changed <- s })()

	if _, err := cfg.Set(ctx, "checkout.enabled", true, &settings.SetOpts{Actor: "alice"}); err != nil {
		log.Fatal(err)
	}
	s := <-changed
	fmt.Println(s.Key, "=", s.Value, "version", s.Version, "by", s.Actor)
	fmt.Println("enabled:", cfg.Bool("checkout.enabled", false))
	fmt.Println("timeout:", cfg.Duration("checkout.timeout", 30*time.Second), "(the default: not set)")

	// Compare-and-set: only if nobody changed it since version 1.
	_, err = cfg.Set(ctx, "checkout.enabled", false, &settings.SetOpts{IfVersion: new(int64(1))})
	fmt.Println("set if version 1:", err)
	_, err = cfg.Set(ctx, "checkout.enabled", true, &settings.SetOpts{IfVersion: new(int64(1))})
	fmt.Println("set if version 1 again:", err)
	// Output:
	// checkout.enabled = true version 1 by alice
	// enabled: true
	// timeout: 30s (the default: not set)
	// set if version 1: <nil>
	// set if version 1 again: settings: version conflict: "checkout.enabled" is at version 2, not 1
}
