package twice

import (
	"context"
	"fmt"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/natsbus"
	"github.com/twicehq/twice/store"
)

// openBus starts the bus [Config.Bus] names.
func (n *Node) openBus(ctx context.Context) (bus.Bus, error) {
	signer, opts, err := n.busSecurity()
	if err != nil {
		return nil, err
	}
	n.signer = signer
	if n.cfg.Bus == "" {
		return bus.NewStore(ctx, n.store, bus.Config{Service: n.cfg.Name, Instance: n.cfg.InstanceID, Signer: signer, Logger: n.log})
	}
	return natsbus.New(ctx, natsbus.Config{URL: n.cfg.Bus, Service: n.cfg.Name, Instance: n.cfg.InstanceID,
		Store: n.store, Options: opts, Signer: signer, Logger: n.log})
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
