package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// fulfilment is the input of an order's fulfilment workflow: what it reserves and charges,
// as the order was placed.
type fulfilment struct {
	OrderID   int64  `json:"order_id"`
	ProductID int64  `json:"product_id"`
	Quantity  int64  `json:"quantity"`
	Cents     int64  `json:"cents"`
	Note      string `json:"note"`
}

// fulfilmentID is the workflow id of order id's fulfilment.
func fulfilmentID(order int64) string { return fmt.Sprintf("order-%d", order) }

const (
	sqlReserve = `UPDATE shop_products SET stock = stock - $2 WHERE id = $1 AND stock >= $2`
	sqlRelease = `UPDATE shop_products SET stock = stock + $2 WHERE id = $1`
	sqlCharge  = `INSERT INTO shop_payments (key, order_id, cents, made_by) VALUES ($1, $2, $3, $4)
		ON CONFLICT (key) DO NOTHING`
	sqlRefund = `UPDATE shop_payments SET state = 'refunded' WHERE key = $1`
)

// declineWord in an order's note makes the card be declined: a person trying the demo
// sees the workflow compensate (the stock it reserved is given back).
const declineWord = "decline"

var errOutOfStock = errors.New("out of stock")

// registerFulfilment registers the workflow that fulfils an order: reserve the stock,
// charge the card, ship. It runs on whichever instance takes its job, resumes on another
// after a crash without doing a completed step again, and undoes the reservation if the
// charge fails for good.
func (s *Shop) registerFulfilment() error {
	var err error
	s.fulfil, err = workflow.Register(s.node.Workflows(), workflow.Def[fulfilment]{Name: "shop.fulfil", Version: 1,
		Run: func(wc *workflow.Context, f fulfilment) error {
			if _, err := workflow.DoTx(wc, workflow.StepTx[int64]{Name: "reserve stock", Do: s.reserve(f), Compensate: s.release(f)}); err != nil {
				return err
			}
			if _, err := workflow.Do(wc, workflow.Step[string]{Name: "charge", Do: s.charge(f), Compensate: s.refund}); err != nil {
				return err
			}
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "ship", Do: ship})
			return err
		}})
	return err
}

// reserve takes the order's quantity off the product's stock, with the step's checkpoint,
// and drops every instance's cached catalogue (which shows the stock) when it commits.
func (s *Shop) reserve(f fulfilment) func(context.Context, store.Tx, string) (int64, error) {
	return func(ctx context.Context, tx store.Tx, _ string) (int64, error) {
		n, err := tx.Exec(ctx, sqlReserve, f.ProductID, f.Quantity)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, workflow.Permanent(errOutOfStock)
		}
		return f.Quantity, s.catalogue.InvalidateTx(ctx, tx, catalogueKey)
	}
}

// release gives the reserved units back.
func (s *Shop) release(f fulfilment) func(context.Context, string, int64) error {
	return func(ctx context.Context, _ string, units int64) error {
		return s.node.Store().InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.Exec(ctx, sqlRelease, f.ProductID, units); err != nil {
				return err
			}
			return s.catalogue.InvalidateTx(ctx, tx, catalogueKey)
		})
	}
}

// charge is the stand-in for a payment provider's API: it charges once per idempotency
// key (the step's, the same on every attempt), so an attempt repeated after a crash does
// not charge twice. It declines an order whose note says so.
func (s *Shop) charge(f fulfilment) func(context.Context, string) (string, error) {
	return func(ctx context.Context, key string) (string, error) {
		if strings.Contains(strings.ToLower(f.Note), declineWord) {
			return "", workflow.Permanent(errors.New("card declined"))
		}
		_, err := s.node.Store().Exec(ctx, sqlCharge, key, f.OrderID, f.Quantity*f.Cents, s.slot+" "+s.node.ID())
		return key, err
	}
}

// refund marks the payment refunded, as a provider's refund of that key would.
func (s *Shop) refund(ctx context.Context, _ string, payment string) error {
	_, err := s.node.Store().Exec(ctx, sqlRefund, payment)
	return err
}

// ship is the stand-in for a carrier's API: the parcel's tracking number follows from the
// step's idempotency key, as a carrier that books once per key would return the same one.
func ship(_ context.Context, key string) (string, error) {
	h := sha256.Sum256([]byte(key))
	return "TW" + strings.ToUpper(hex.EncodeToString(h[:5])), nil
}
