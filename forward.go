package twice

import (
	"errors"
	"fmt"

	"github.com/twicehq/twice/forward"
)

// Forwarder returns HTTP middleware that sends each request to the instance owning the key
// it is about, over the address that instance advertises, signed with the cluster secret
// (see package forward). The node fills cfg's Secret ([Config.ClusterSecret]), Service,
// Instance and, when nil, Logger; cfg gives Key (which key a request is about) and Locate
// (who owns it). The node needs ClusterSecret, and AdvertiseAddr: the address other
// instances forward this one's requests to. Close the forwarder on shutdown.
func (n *Node) Forwarder(cfg forward.Config) (*forward.Forwarder, error) {
	var errs []error
	if len(n.cfg.ClusterSecret) == 0 {
		errs = append(errs, errors.New("Config.ClusterSecret is required: it authenticates the requests instances forward to each other"))
	}
	if n.cfg.AdvertiseAddr == "" {
		errs = append(errs, errors.New("Config.AdvertiseAddr is required: the address other instances forward requests to"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("twice: Forwarder: %w", errors.Join(errs...))
	}
	cfg.Secret, cfg.Service, cfg.Instance = n.cfg.ClusterSecret, n.cfg.Name, n.cfg.InstanceID
	if cfg.Logger == nil {
		cfg.Logger = n.cfg.Logger
	}
	return forward.New(cfg)
}
