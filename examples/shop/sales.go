package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/store"
)

// orderPlaced is the payload of an order.placed event.
type orderPlaced struct {
	OrderID   int64 `json:"order_id"`
	ProductID int64 `json:"product_id"`
	Quantity  int64 `json:"quantity"`
}

const (
	topicOrderPlaced = "order.placed"
	salesGroup       = "shop-sales"
	sqlSold          = `INSERT INTO shop_sales (product_id, sold) VALUES ($1, $2)
		ON CONFLICT (product_id) DO UPDATE SET sold = shop_sales.sold + excluded.sold`
)

// publishOrderPlaced publishes the order's event in its transaction: it exists if and only
// if the order does. Keyed by product, so one product's sales are counted in order.
func (s *Shop) publishOrderPlaced(ctx context.Context, tx store.Tx, e orderPlaced) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = s.node.Events().PublishTx(ctx, tx, events.Message{Topic: topicOrderPlaced,
		Key: strconv.FormatInt(e.ProductID, 10), Payload: payload})
	return err
}

// countSales joins the consumer group that keeps shop_sales, the units sold per product
// that the catalogue shows. It is exactly once: each event's count and the group's
// checkpoint commit in one transaction, so an instance killed mid-way neither loses nor
// doubles a sale.
func (s *Shop) countSales(ctx context.Context) error {
	_, err := s.node.Events().Subscribe(ctx, events.GroupConfig{Name: salesGroup, Topics: []string{topicOrderPlaced},
		Mode: events.ExactlyOnce, HandleTx: s.countSale})
	return err
}

func (s *Shop) countSale(ctx context.Context, tx store.Tx, e events.Event) error {
	var o orderPlaced
	if err := json.Unmarshal(e.Payload, &o); err != nil {
		return fmt.Errorf("shop: event %d: %w", e.ID, err)
	}
	if _, err := tx.Exec(ctx, sqlSold, o.ProductID, o.Quantity); err != nil {
		return err
	}
	return s.catalogue.InvalidateTx(ctx, tx, catalogueKey)
}
