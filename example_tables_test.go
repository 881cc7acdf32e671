package twice_test

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// The application's own migrations, laid out as store.LoadComponent reads them:
// migrations/<dialect>/NNNN_name.up.sql and .down.sql, for both dialects.
//
//go:embed testdata/shop/migrations
var shopFiles embed.FS

// shopComponent is the application's schema as a component of its own.
func shopComponent() store.Component {
	dir, err := fs.Sub(shopFiles, "testdata/shop")
	if err != nil {
		log.Fatal(err)
	}
	return store.MustLoadComponent("shop", dir)
}

// receipt is the job an order enqueues in its own transaction.
type receipt struct {
	OrderID int64 `json:"order_id"`
}

func (receipt) Kind() string { return "receipt" }

// placeOrder writes an order and enqueues its receipt in one transaction: either both
// commit or neither does. The statement is the same on both stores.
func placeOrder(ctx context.Context, node *twice.Node, user string, total int64) (int64, error) {
	var id int64
	err := node.Store().InTx(ctx, func(tx store.Tx) error {
		err := tx.QueryRow(ctx, "INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id", user, total).Scan(&id)
		if err != nil {
			return err
		}
		_, err = node.Jobs().EnqueueTx(ctx, tx, receipt{OrderID: id}, nil)
		return err
	})
	return id, err
}

// order is a row of the orders table.
type order struct {
	ID      int64
	User    string
	Total   int64
	Paid    bool
	Created time.Time
}

// ordersSince reads a user's orders created after since, on the readers. The time is bound
// with TimeArg and scanned with store.Time, so the query is the same on both stores.
func ordersSince(ctx context.Context, node *twice.Node, user string, since time.Time) ([]order, error) {
	s := node.Store()
	rows, err := s.Reader().Query(ctx, "SELECT id, user_id, total, paid, created_at FROM orders WHERE user_id = $1 AND created_at > $2 ORDER BY id",
		user, s.TimeArg(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []order
	for rows.Next() {
		var o order
		var created store.Time
		if err := rows.Scan(&o.ID, &o.User, &o.Total, &o.Paid, &created); err != nil {
			return nil, err
		}
		o.Created = created.Time
		out = append(out, o)
	}
	return out, rows.Err()
}

// Your own tables: migrations embedded per dialect and applied under twice's migration lock,
// then an order written in the same transaction as its job, and read back with a time bound.
func ExampleNode_Store() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "shop", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	steps, err := store.NewMigrator(node.Store(), shopComponent()).Up(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("applied:", steps)

	id, err := placeOrder(ctx, node, "ann", 4200)
	if err != nil {
		log.Fatal(err)
	}
	queued, err := node.Jobs().List(ctx, jobs.ListParams{Kind: "receipt"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("order", id, "and its receipt job:", len(queued))

	orders, err := ordersSince(ctx, node, "ann", time.Now().Add(-time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range orders {
		fmt.Printf("order %d by %s: %d, paid %v, placed in the last hour\n", o.ID, o.User, o.Total, o.Paid)
	}
	// Output:
	// applied: [shop 0001_orders]
	// order 1 and its receipt job: 1
	// order 1 by ann: 4200, paid false, placed in the last hour
}
