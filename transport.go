package twice

import (
	"context"
	"fmt"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/natsbus"
	"github.com/twicehq/twice/store"
)

// openBus starts the bus [Config.Bus] names. It returns a nil interface on error, never a
// nil *natsbus.Bus inside one, which abort would try to close.
func (n *Node) openBus(ctx context.Context) (bus.Bus, error) {
	signer, opts, err := n.busSecurity()
	if err != nil {
		return nil, err
	}
	n.signer = signer
	if n.cfg.Bus == "" {
		b, err := bus.NewStore(ctx, n.store, bus.Config{Service: n.cfg.Name, Instance: n.cfg.InstanceID, Signer: signer,
			Logger: n.log, Panics: &n.panics})
		if err != nil {
			return nil, fmt.Errorf("twice: cannot start the store's bus: %w", err)
		}
		return b, nil
	}
	b, err := natsbus.New(ctx, natsbus.Config{URL: n.cfg.Bus, Service: n.cfg.Name, Instance: n.cfg.InstanceID,
		Store: n.store, Options: opts, Signer: signer, Logger: n.log, Panics: &n.panics})
	if err != nil {
		return nil, fmt.Errorf("twice: cannot start the NATS bus: %w", err)
	}
	return b, nil
}

// validBus checks [Config.Bus]: empty, or NATS URLs. The error shows the URL with its
// credentials masked.
func validBus(s string) error {
	if s == "" {
		return nil
	}
	if err := natsbus.CheckURL(s); err != nil {
		return fmt.Errorf("Bus %q: %w", store.Redact(s), err)
	}
	return nil
}
