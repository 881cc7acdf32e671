package twice

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/natsbus"
)

// openBus starts the bus [Config.Bus] names. It returns a nil interface on error, never a
// nil *natsbus.Bus inside one, which abort would try to close.
func (n *Node) openBus(ctx context.Context) (bus.Bus, error) {
	if n.cfg.Bus == "" {
		b, err := bus.NewStore(ctx, n.store, bus.Config{Service: n.cfg.Name, Instance: n.cfg.InstanceID, Logger: n.log,
			Panics: &n.panics})
		if err != nil {
			return nil, fmt.Errorf("twice: cannot start the store's bus: %w", err)
		}
		return b, nil
	}
	b, err := natsbus.New(ctx, natsbus.Config{URL: n.cfg.Bus, Service: n.cfg.Name, Instance: n.cfg.InstanceID,
		Store: n.store, Logger: n.log, Panics: &n.panics})
	if err != nil {
		return nil, fmt.Errorf("twice: cannot start the NATS bus: %w", err)
	}
	return b, nil
}

// validBus checks [Config.Bus]: empty, or NATS URLs.
func validBus(s string) error {
	if s == "" {
		return nil
	}
	for _, u := range strings.Split(s, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" {
			return fmt.Errorf("Bus %q is not a NATS URL (nats://host:port)", u)
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("Bus %q: scheme %q is not nats, tls, ws or wss", u, p.Scheme)
		}
	}
	return nil
}
