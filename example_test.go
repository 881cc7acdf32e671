package twice_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/store"
)

// scratch returns a DSN on a throwaway SQLite file, as a laptop run would use.
func scratch() (dsn string, cleanup func()) {
	dir, err := os.MkdirTemp("", "twice-example-")
	if err != nil {
		log.Fatal(err)
	}
	return "sqlite:" + filepath.Join(dir, "twice.db"), func() { os.RemoveAll(dir) }
}

var quiet = slog.New(slog.DiscardHandler)

// Open a node per process, and Close it on shutdown so the cluster takes over at once.
func ExampleOpen() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()

	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	members, err := node.Members(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready:", node.Ready())
	fmt.Println("instances:", len(members), members[0].State)
	// Output:
	// ready: true
	// instances: 1 ready
}

// Run leader-only work in OnElected: it starts when this instance is elected and its context
// ends when it stops leading. Writes that must not come from a stale leader are fenced.
func ExampleNode_Leader() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	elected := make(chan struct{})
	node.Leader().OnElected(func(ctx context.Context) {
		// Leader-only work goes here; return when ctx is done.
		close(elected)
		<-ctx.Done()
	})
	<-elected

	lease := node.Leader().Lease()
	err = node.Store().InTx(ctx, func(tx store.Tx) error {
		if err := twice.Fenced(ctx, tx, lease); err != nil {
			return err // a newer leader exists: do not write
		}
		// … the leader's write, in tx …
		return nil
	})
	fmt.Println("leader:", node.IsLeader(), "token:", lease.Token(), "fenced write:", err)
	// Output:
	// leader: true token: 1 fenced write: <nil>
}

// A cluster-wide lock: Do waits for it, runs the function under it, and releases it.
func ExampleNode_Locks() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	err = node.Locks().Do(ctx, "invoice-42", nil, func(ctx context.Context) error {
		// ctx ends if the lock is lost; no other instance holds it until this returns.
		fmt.Println("holding invoice-42")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	lock, ok, err := node.Locks().TryAcquire(ctx, "report", nil)
	if err != nil || !ok {
		log.Fatal(ok, err)
	}
	defer lock.Release(ctx)
	fmt.Println("report lock token:", lock.Token())

	sem, err := node.Locks().Semaphore("exports", 2)
	if err != nil {
		log.Fatal(err)
	}
	slot, err := sem.Acquire(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer slot.Release(ctx)
	fmt.Println("export slot held:", slot.Valid())
	// Output:
	// holding invoice-42
	// report lock token: 1
	// export slot held: true
}

// Health serves /livez, /readyz and /healthz; add your own readiness checks.
func ExampleNode_Health() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	_ = node.Health().Register("payments-api", 0, func(ctx context.Context) error { return nil })
	ready, failed := node.Health().Ready(ctx)
	fmt.Println("ready:", ready, "failed:", len(failed))
	// mux.Handle("/healthz", node.Health()); mux.Handle("/readyz", node.Health()) …
	// Output:
	// ready: true failed: 0
}

// Count heartbeat stalls: stretches long enough for the cluster to count this instance dead
// (a frozen VM, a long pause, a database that did not answer). While it looked dead, its
// running jobs may have been rescued and run elsewhere; an alert on this counter, or on the
// age of LastHeartbeat, tells you before users do.
func ExampleNode_OnHeartbeatStall() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	var stalls atomic.Int64 // export it as a metric
	node.OnHeartbeatStall(func(from, to time.Time) {
		stalls.Add(1)
		slog.Warn("counted dead for a while", "from", from, "for", to.Sub(from))
	})
	fmt.Println("last heartbeat within dead-after:", time.Since(node.LastHeartbeat()) < node.Config().DeadAfter)
	fmt.Println("stalls:", stalls.Load())
	// Output:
	// last heartbeat within dead-after: true
	// stalls: 0
}
