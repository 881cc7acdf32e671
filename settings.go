package twice

import (
	"context"

	"github.com/twicehq/twice/settings"
)

// Settings is the service's cluster-wide configuration: typed values with versions and
// history, read from this instance's memory and kept current over the bus. The same
// settings are read and changed with `twice config`.
func (n *Node) Settings() *settings.Settings { return n.settings }

func (n *Node) startSettings(ctx context.Context) error {
	s, err := settings.New(ctx, n.store, n.bus, settings.Config{Service: n.cfg.Name, Instance: n.cfg.InstanceID, Logger: n.log,
		Panics: &n.panics})
	if err != nil {
		return err
	}
	n.settings = s
	n.onClose(s.Close)
	return nil
}
