package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

type Order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// An order saga: reserve stock in the service's own database (effect and checkpoint in one
// transaction), then charge; the charge fails for good, so the reservation is undone.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "twice-workflow-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	if _, err := node.Store().Exec(ctx, `CREATE TABLE holds (order_id TEXT PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}

	orders, err := workflow.Register(node.Workflows(), workflow.Def[Order]{Name: "order", Version: 1,
		Run: func(wc *workflow.Context, o Order) error {
			_, err := workflow.DoTx(wc, workflow.StepTx[string]{Name: "reserve",
				Do: func(ctx context.Context, tx store.Tx, key string) (string, error) {
					_, err := tx.Exec(ctx, `INSERT INTO holds (order_id) VALUES ($1)`, o.ID)
					return o.ID, err
				},
				Compensate: func(ctx context.Context, key string, held string) error {
					_, err := node.Store().Exec(ctx, `DELETE FROM holds WHERE order_id = $1`, held)
					return err
				}})
			if err != nil {
				return err
			}
			_, err = workflow.Do(wc, workflow.Step[string]{Name: "charge",
				Do: func(ctx context.Context, key string) (string, error) {
					fmt.Println("charging with idempotency key", key)
					return "", workflow.Permanent(errors.New("card declined"))
				}})
			return err
		}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := orders.Start(ctx, "order-42", Order{ID: "42", Total: 1999}); err != nil {
		log.Fatal(err)
	}

	var st *workflow.Status
	for st == nil || !st.State.Finished() {
		time.Sleep(10 * time.Millisecond)
		if st, err = node.Workflows().Get(ctx, "order-42"); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(st.State, "-", st.Error)
	for _, s := range st.Steps {
		fmt.Printf("step %d %s: %s, compensation %q\n", s.Seq, s.Name, s.State, s.Compensation)
	}
	var holds int
	if err := node.Store().QueryRow(ctx, `SELECT count(*) FROM holds`).Scan(&holds); err != nil {
		log.Fatal(err)
	}
	fmt.Println("holds left:", holds)
	// Output:
	// charging with idempotency key order-42/charge
	// compensated - workflow: step "charge" failed after 1 attempt: card declined
	// step 1 reserve: completed, compensation "done"
	// step 2 charge: failed, compensation ""
	// holds left: 0
}

// exampleNode opens a node on a fresh SQLite database; close returns it.
func exampleNode(ctx context.Context) (node *twice.Node, close func()) {
	dir, err := os.MkdirTemp("", "twice-workflow-example-")
	if err != nil {
		log.Fatal(err)
	}
	node, err = twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	return node, func() { node.Close(ctx); os.RemoveAll(dir) }
}

// awaitExample polls the workflow id until it has ended.
func awaitExample(ctx context.Context, e *workflow.Engine, id string) *workflow.Status {
	for {
		st, err := e.Get(ctx, id)
		if err != nil {
			log.Fatal(err)
		}
		if st.State.Finished() {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A reminder sent a while after the order: the workflow sleeps durably in between, holding
// no worker, and an instance that dies meanwhile does not restart the sleep.
func ExampleSleep() {
	ctx := context.Background()
	node, close := exampleNode(ctx)
	defer close()
	reminders, err := workflow.Register(node.Workflows(), workflow.Def[Order]{Name: "reminder",
		Run: func(wc *workflow.Context, o Order) error {
			if err := workflow.Sleep(wc, "a while", 50*time.Millisecond); err != nil {
				return err // the run ends here, and resumes once the sleep is over
			}
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "remind",
				Do: func(ctx context.Context, key string) (string, error) { return "sent for " + o.ID, nil }})
			return err
		}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := reminders.Start(ctx, "remind-42", Order{ID: "42"}); err != nil {
		log.Fatal(err)
	}
	st := awaitExample(ctx, node.Workflows(), "remind-42")
	fmt.Println(st.State)
	for _, s := range st.Steps {
		fmt.Printf("%d %s %q: %s\n", s.Seq, s.Kind, s.Name, strings.TrimSpace(s.State+" "+string(s.Result)))
	}
	// Output:
	// completed
	// 1 sleep "a while": completed
	// 2 step "remind": completed "sent for 42"
}

// A refund over a limit waits for a person's approval, for a day at most; the approval is
// a signal that may be sent from any instance, before or while the workflow waits.
func ExampleWaitSignal() {
	ctx := context.Background()
	node, close := exampleNode(ctx)
	defer close()
	refunds, err := workflow.Register(node.Workflows(), workflow.Def[Order]{Name: "refund",
		Run: func(wc *workflow.Context, o Order) error {
			approved, err := workflow.WaitSignal[bool](wc, "approval", 24*time.Hour)
			if errors.Is(err, workflow.ErrTimeout) {
				approved = false // nobody answered in a day: refuse
			} else if err != nil {
				return err // waiting: the run ends, and resumes when the signal commits
			}
			_, err = workflow.Do(wc, workflow.Step[string]{Name: "answer",
				Do: func(ctx context.Context, key string) (string, error) {
					fmt.Println("refund of order", o.ID, "approved:", approved)
					return "", nil
				}})
			return err
		}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := refunds.Start(ctx, "refund-42", Order{ID: "42", Total: 5000}); err != nil {
		log.Fatal(err)
	}
	// Later, in the handler of the person's click:
	if err := node.Workflows().Signal(ctx, "refund-42", "approval", true); err != nil {
		log.Fatal(err)
	}
	fmt.Println(awaitExample(ctx, node.Workflows(), "refund-42").State)
	// Output:
	// refund of order 42 approved: true
	// completed
}

// A fan-out: the price of each line of an order is asked of an outside service at once,
// each a step with its own stored result, and the results are added up (a map-reduce).
// After a crash only the lines not yet priced are asked again.
func ExampleDoAll() {
	ctx := context.Background()
	node, closeNode := exampleNode(ctx)
	defer closeNode()
	prices := map[string]int{"tea": 450, "mug": 1200, "spoon": 300}
	quotes, err := workflow.Register(node.Workflows(), workflow.Def[[]string]{Name: "quote",
		Run: func(wc *workflow.Context, skus []string) error {
			var lines []workflow.Step[int]
			for _, sku := range skus {
				lines = append(lines, workflow.Step[int]{Name: "price/" + sku,
					Do: func(ctx context.Context, key string) (int, error) { return prices[sku], nil }})
			}
			each, err := workflow.DoAll(wc, lines...)
			if err != nil {
				return err
			}
			total, err := workflow.Do(wc, workflow.Step[int]{Name: "total",
				Do: func(context.Context, string) (int, error) {
					sum := 0
					for _, p := range each {
						sum += p
					}
					return sum, nil
				}})
			fmt.Println("prices", each, "total", total)
			return err
		}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := quotes.Start(ctx, "quote-7", []string{"tea", "mug", "spoon"}); err != nil {
		log.Fatal(err)
	}
	st := awaitExample(ctx, node.Workflows(), "quote-7")
	fmt.Println(st.State, len(st.Steps), "steps")
	// Output:
	// prices [450 1200 300] total 1950
	// completed 4 steps
}

// A refund that fails on every attempt leaves the order's workflow to a person. Once the
// payment provider is back, a retry runs that refund again, and only it.
func ExampleEngine_Retry() {
	ctx := context.Background()
	node, closeNode := exampleNode(ctx)
	defer closeNode()
	var providerUp atomic.Bool
	orders, err := workflow.Register(node.Workflows(), workflow.Def[Order]{Name: "order",
		Run: func(wc *workflow.Context, o Order) error {
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "charge",
				Do: func(ctx context.Context, key string) (string, error) { return "payment " + o.ID, nil },
				Compensate: func(ctx context.Context, key, payment string) error {
					if !providerUp.Load() {
						return errors.New("payment provider unavailable")
					}
					fmt.Println("refunded", payment)
					return nil
				},
				CompensateRetry: workflow.Retry{Attempts: 2, Backoff: func(int) time.Duration { return time.Millisecond }}})
			if err != nil {
				return err
			}
			_, err = workflow.Do(wc, workflow.Step[string]{Name: "ship",
				Do: func(ctx context.Context, key string) (string, error) {
					return "", workflow.Permanent(errors.New("no such address"))
				}})
			return err
		}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := orders.Start(ctx, "order-7", Order{ID: "7"}); err != nil {
		log.Fatal(err)
	}
	st := awaitExample(ctx, node.Workflows(), "order-7")
	fmt.Println(st.State, "-", st.Error)

	providerUp.Store(true) // the person saw the provider is back
	if err := node.Workflows().Retry(ctx, "order-7"); err != nil {
		log.Fatal(err)
	}
	st = awaitExample(ctx, node.Workflows(), "order-7")
	fmt.Println(st.State, "-", st.Error)
	// Output:
	// failed - compensation of step(s) ["charge"] failed on every attempt: a person must look
	// refunded payment 7
	// compensated - retried after: compensation of step(s) ["charge"] failed on every attempt: a person must look
}
