package instance

import (
	"context"
	"fmt"
	"time"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/store"
)

// EventsTopic and EventsGroup are the topic and group a [Consume] workload consumes.
const (
	EventsTopic = "crash"
	EventsGroup = "crash-effects"
)

// Consume is the workload "consume": the instance joins the group EventsGroup on
// EventsTopic and records every event it handles in EffectsTable, in the group's
// transaction for exactly-once, on its own for shared (at least once).
type Consume struct {
	// Mode is "exactly-once" or "shared".
	Mode string `json:"mode"`
	// Work is how long handling one event takes (a sleep in the handler, inside the
	// group's transaction for exactly-once), so that kills land mid-batch.
	Work time.Duration `json:"work,omitempty"`
}

// Name implements Workload.
func (Consume) Name() string { return "consume" }

func (w Consume) start(ctx context.Context, in *env) (func(), error) {
	node := in.node
	cfg := events.GroupConfig{Name: EventsGroup, Topics: []string{EventsTopic}, BatchSize: 20}
	insert := "INSERT INTO " + EffectsTable + " (event_id, instance) VALUES ($1, $2)"
	switch w.Mode {
	case "exactly-once":
		cfg.Mode = events.ExactlyOnce
		cfg.HandleTx = func(ctx context.Context, tx store.Tx, e events.Event) error {
			if _, err := tx.Exec(ctx, insert, e.ID, node.ID()); err != nil {
				return err
			}
			time.Sleep(w.Work)
			return nil
		}
	case "shared":
		cfg.Handle = func(ctx context.Context, e events.Event) error {
			if _, err := node.Store().Exec(ctx, insert, e.ID, node.ID()); err != nil {
				return err
			}
			time.Sleep(w.Work)
			return nil
		}
	default:
		return nil, fmt.Errorf("unknown mode %q", w.Mode)
	}
	// The node closes the consumer when it drains.
	_, err := node.Events().Subscribe(ctx, cfg)
	return func() {}, err
}
