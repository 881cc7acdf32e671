// Command ordersaga runs an order saga as a durable workflow (package workflow) and prints
// what became of each order:
//
//  1. reserve the stock, in the service's own table: [workflow.DoTx], so the stock moves
//     and the step's checkpoint commit in one transaction, exactly once;
//  2. charge the card at a payment provider ([workflow.Do]), passing the step's
//     idempotency key, the same on every attempt: the provider (a fake one, served over
//     HTTP in this process) charges once per key, so an attempt whose answer was lost on
//     the way back is retried without charging twice;
//  3. ship ([workflow.Do]).
//
// A step that fails for good makes the workflow undo its completed steps, newest first:
// refund the charge, then release the stock. The program starts three orders: one that
// completes (its first charge's answer is lost: the retry gets the same charge), one
// whose shipping fails on every attempt (refunded, then released: compensated), and one
// out of stock (nothing to undo). It prints each workflow's history ([workflow.Engine.Get])
// and its effects, in the order they happened.
//
//	go run ./examples/ordersaga                       # an SQLite file in a temporary directory
//	go run ./examples/ordersaga --dsn postgres://…    # $TWICE_SCHEMA picks the schema
//
// The shop of examples/shop runs the same saga behind a web page, on three instances.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

//go:embed migrations
var migrations embed.FS

func main() {
	dsn := flag.String("dsn", "", "the database (postgres://… or sqlite:PATH); default: an SQLite file in a temporary directory")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "ordersaga takes no arguments; see -h")
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := twice.Config{DSN: *dsn, Name: "ordersaga", Logger: logger}
	if cfg.DSN == "" {
		dir, err := os.MkdirTemp("", "ordersaga-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "ordersaga:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
		cfg.DSN = "sqlite:" + filepath.Join(dir, "ordersaga.db")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ordersaga:", err)
		cancel()
		os.Exit(1)
	}
}

// order is the input of an order's workflow.
type order struct {
	ID       string `json:"id"`
	SKU      string `json:"sku"`
	Units    int64  `json:"units"`
	Cents    int64  `json:"cents"` // per unit
	Address  string `json:"address"`
	LoseOnce bool   `json:"lose_once,omitempty"` // the provider's first answer to its charge is lost
}

// outcome is what became of one order.
type outcome struct {
	ID      string
	State   workflow.State
	Error   string
	Steps   []workflow.StepRecord
	Effects []string // on the stock and at the provider, in the order they happened
}

// report is what run did, for its test.
type report struct {
	Orders           []outcome
	Stock            int64 // the lamps left
	Charges, Refunds int   // made at the provider
}

const initialStock = 5

var errOutOfStock = errors.New("out of stock")

// saga is the program's state: the node, the provider and the journal's count.
type saga struct {
	node *twice.Node
	pay  *payClient
	seq  atomic.Int64 // counts the effects, so that the stock's and the provider's read in order
}

// run opens a node on cfg, runs the three orders to their end and prints them to out.
func run(ctx context.Context, cfg twice.Config, out io.Writer) (*report, error) {
	node, err := twice.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer node.Close(context.WithoutCancel(ctx))
	if err := migrate(ctx, node.Store()); err != nil {
		return nil, err
	}
	s := &saga{node: node}
	provider := newPayments(&s.seq)
	var stop func()
	if s.pay, stop, err = provider.serve(); err != nil {
		return nil, err
	}
	defer stop()

	// Each run starts from a full shelf and orders of its own, so that it can run again on
	// the same PostgreSQL database.
	svc := node.Service()
	if _, err := node.Store().Exec(ctx, `INSERT INTO ordersaga_stock (service, sku, units) VALUES ($1, 'lamp', $2)
		ON CONFLICT (service, sku) DO UPDATE SET units = excluded.units`, svc, initialStock); err != nil {
		return nil, err
	}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	prefix := "order-" + hex.EncodeToString(tag) + "-"
	orders := []order{
		{ID: prefix + "1", SKU: "lamp", Units: 1, Cents: 4900, Address: "1 rue de Rivoli, Paris", LoseOnce: true},
		{ID: prefix + "2", SKU: "lamp", Units: 2, Cents: 4900, Address: "Atlantis"},
		{ID: prefix + "3", SKU: "lamp", Units: 99, Cents: 4900, Address: "10 Downing Street, London"},
	}

	wf, err := workflow.Register(node.Workflows(), workflow.Def[order]{Name: "order", Version: 1, Run: s.order})
	if err != nil {
		return nil, err
	}
	for _, o := range orders {
		if o.LoseOnce {
			provider.mu.Lock()
			provider.loseOnce[o.ID] = true
			provider.mu.Unlock()
		}
		if _, err := wf.Start(ctx, o.ID, o); err != nil {
			return nil, err
		}
	}

	r := &report{}
	for _, o := range orders {
		st, err := await(ctx, node.Workflows(), o.ID)
		if err != nil {
			return nil, err
		}
		oc := outcome{ID: o.ID, State: st.State, Error: st.Error, Steps: st.Steps}
		if oc.Effects, err = s.effects(ctx, provider, o.ID); err != nil {
			return nil, err
		}
		r.Orders = append(r.Orders, oc)
		printOutcome(out, oc)
	}
	if err := node.Store().QueryRow(ctx, `SELECT units FROM ordersaga_stock WHERE service = $1 AND sku = 'lamp'`, svc).Scan(&r.Stock); err != nil {
		return nil, err
	}
	r.Charges, r.Refunds = provider.made()
	fmt.Fprintf(out, "lamps in stock: %d of %d; charges made: %d, refunded: %d\n", r.Stock, initialStock, r.Charges, r.Refunds)
	return r, nil
}

// order is the saga: reserve, charge, ship. Returning an error makes the workflow
// compensate its completed steps, newest first.
func (s *saga) order(wc *workflow.Context, o order) error {
	quick := func(int) time.Duration { return 50 * time.Millisecond } // a demo: retry soon
	units, err := workflow.DoTx(wc, workflow.StepTx[int64]{Name: "reserve",
		Do: func(ctx context.Context, tx store.Tx, _ string) (int64, error) {
			n, err := tx.Exec(ctx, `UPDATE ordersaga_stock SET units = units - $3 WHERE service = $1 AND sku = $2 AND units >= $3`,
				s.node.Service(), o.SKU, o.Units)
			if err != nil {
				return 0, err
			}
			if n == 0 {
				return 0, workflow.Permanent(fmt.Errorf("%d %s: %w", o.Units, o.SKU, errOutOfStock))
			}
			return o.Units, s.move(ctx, tx, o.ID, fmt.Sprintf("reserve %d %s", o.Units, o.SKU))
		},
		Compensate: func(ctx context.Context, _ string, units int64) error {
			return s.node.Store().InTx(ctx, func(tx store.Tx) error {
				if _, err := tx.Exec(ctx, `UPDATE ordersaga_stock SET units = units + $3 WHERE service = $1 AND sku = $2`,
					s.node.Service(), o.SKU, units); err != nil {
					return err
				}
				return s.move(ctx, tx, o.ID, fmt.Sprintf("release %d %s", units, o.SKU))
			})
		}})
	if err != nil {
		return err
	}
	_, err = workflow.Do(wc, workflow.Step[string]{Name: "charge",
		Do: func(ctx context.Context, key string) (string, error) {
			return s.pay.Charge(ctx, key, o.ID, units*o.Cents)
		},
		Compensate: func(ctx context.Context, key, charge string) error {
			return s.pay.Refund(ctx, key, charge) // the same key on every attempt: refunded once
		},
		Retry: workflow.Retry{Attempts: 3, Backoff: quick}, CompensateRetry: workflow.Retry{Backoff: quick}})
	if err != nil {
		return err
	}
	_, err = workflow.Do(wc, workflow.Step[string]{Name: "ship",
		Do: func(ctx context.Context, key string) (string, error) {
			return ship(o.Address, key)
		},
		Retry: workflow.Retry{Attempts: 3, Backoff: quick}})
	return err
}

// ship stands in for a carrier's API: it books a parcel once per idempotency key (the
// tracking number follows from it) and refuses an address no carrier delivers to.
func ship(address, key string) (string, error) {
	if strings.EqualFold(address, "Atlantis") {
		return "", errors.New("no carrier delivers to Atlantis")
	}
	h := sha256.Sum256([]byte(key))
	return "TRK" + strings.ToUpper(hex.EncodeToString(h[:4])), nil
}

// move records a stock move of order in tx, numbered from the journal's count.
func (s *saga) move(ctx context.Context, tx store.Tx, order, what string) error {
	_, err := tx.Exec(ctx, `INSERT INTO ordersaga_moves (service, order_id, seq, what) VALUES ($1, $2, $3, $4)`,
		s.node.Service(), order, s.seq.Add(1), what)
	return err
}

// effects returns what the saga of order did to the stock (committed moves) and at the
// provider, in the order it did it.
func (s *saga) effects(ctx context.Context, p *payments, order string) ([]string, error) {
	all := p.entries(order)
	rows, err := s.node.Store().Query(ctx, `SELECT seq, what FROM ordersaga_moves WHERE service = $1 AND order_id = $2`,
		s.node.Service(), order)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.seq, &e.what); err != nil {
			return nil, err
		}
		all = append(all, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b entry) int { return int(a.seq - b.seq) })
	out := []string{}
	for _, e := range all {
		out = append(out, e.what)
	}
	return out, nil
}

// await polls the workflow id until it has ended, or ctx does.
func await(ctx context.Context, e *workflow.Engine, id string) (*workflow.Status, error) {
	for {
		st, err := e.Get(ctx, id)
		if err != nil || st.State.Finished() {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("workflow %s is still %s: %w", id, st.State, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// printOutcome writes what became of one order: its state, its steps' history and its
// effects.
func printOutcome(out io.Writer, o outcome) {
	fmt.Fprintf(out, "%s: %s", o.ID, o.State)
	if o.Error != "" {
		fmt.Fprintf(out, " (%s)", o.Error)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tNAME\tSTATE\tATTEMPTS\tRESULT OR ERROR\tCOMPENSATION")
	for _, s := range o.Steps {
		res := string(s.Result)
		if s.Error != "" {
			res = s.Error
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\t%s\n", s.Seq, s.Name, s.State, s.Attempts, res, s.Compensation)
	}
	_ = tw.Flush()
	effects := strings.Join(o.Effects, "; ")
	if effects == "" {
		effects = "none"
	}
	fmt.Fprintf(out, "  effects: %s\n\n", effects)
}

// migrate creates the example's tables.
func migrate(ctx context.Context, s *store.Store) error {
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	c, err := store.LoadComponent("ordersaga", dir,
		store.Table{Name: "ordersaga_stock", Service: "service"},
		store.Table{Name: "ordersaga_moves", Service: "service"})
	if err != nil {
		return err
	}
	_, err = store.NewMigrator(s, c).Up(ctx)
	return err
}
