package instance

import (
	"context"
	"fmt"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/store"
)

// EventsTopic and EventsGroup are the topic and group instances with [Options.Events]
// consume.
const (
	EventsTopic = "crash"
	EventsGroup = "crash-effects"
)

// consumeEvents joins the group EventsGroup in mode o.Events ("exactly-once" or "shared"):
// each event handled inserts a row into EffectsTable, in the group's transaction for
// exactly-once, on its own for shared (at least once).
func consumeEvents(ctx context.Context, node *twice.Node, o Options) error {
	cfg := events.GroupConfig{Name: EventsGroup, Topics: []string{EventsTopic}, BatchSize: 20}
	insert := "INSERT INTO " + EffectsTable + " (event_id, instance) VALUES ($1, $2)"
	switch o.Events {
	case "":
		return nil
	case "exactly-once":
		cfg.Mode = events.ExactlyOnce
		cfg.HandleTx = func(ctx context.Context, tx store.Tx, e events.Event) error {
			if _, err := tx.Exec(ctx, insert, e.ID, node.ID()); err != nil {
				return err
			}
			time.Sleep(o.EventWork)
			return nil
		}
	case "shared":
		cfg.Handle = func(ctx context.Context, e events.Event) error {
			if _, err := node.Store().Exec(ctx, insert, e.ID, node.ID()); err != nil {
				return err
			}
			time.Sleep(o.EventWork)
			return nil
		}
	default:
		return fmt.Errorf("instance: unknown Events mode %q", o.Events)
	}
	// The node closes the consumer when it drains.
	_, err := node.Events().Subscribe(ctx, cfg)
	return err
}
