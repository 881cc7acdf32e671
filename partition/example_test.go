package partition_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
)

// Join a partition set: each instance of the service that joins it owns about its share of
// the partitions, and works each one under a fence. Owner says which instance owns a key,
// and where to reach it.
func ExampleManager_Join() {
	dir, err := os.MkdirTemp("", "twice-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "chat",
		AdvertiseAddr: "10.0.0.7:8080", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	assigned := make(chan int, 4)
	rooms, err := node.Partitions().Join(ctx, partition.Config{
		Name:       "rooms",
		Partitions: 4,
		OnAssigned: func(ctx context.Context, a *partition.Assignment) {
			// Load the partition's state here, and start its work under a.Go: a
			// hand-over waits for that work to end before another instance takes over.
			a.Go(func(ctx context.Context) {
				err := node.Store().InTx(ctx, func(tx store.Tx) error {
					if err := a.Check(ctx, tx); err != nil {
						return err // another instance owns the partition now: do not write
					}
					// … a write on behalf of the partition, in tx …
					return nil
				})
				if err == nil {
					assigned <- a.Partition()
				}
			})
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for range 4 {
		<-assigned
	}
	owner, err := rooms.Owner("room:42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("partitions here:", rooms.Mine())
	fmt.Println("room:42 is in partition", owner.Partition, "owned here:", owner.Self, "at", owner.Addr)
	// Output:
	// partitions here: [0 1 2 3]
	// room:42 is in partition 2 owned here: true at 10.0.0.7:8080
}
