package twice

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice/bus"
)

// NATSConfig says how a node connects to the NATS server [Config.Bus] names: how it
// authenticates and how it checks the server. A user and password, or a token, can also go
// in the URL (nats://user:password@host:4222). Give the service's user permission to
// publish and subscribe on twice.bus.<service>.> only, where <service> is [Config.Name]
// base64url-encoded (see natsbus.Subject).
type NATSConfig struct {
	// CredsFile is a user credentials file (a user JWT and its NKey seed), as nsc writes
	// them. Defaults to none.
	CredsFile string
	// NKeyFile is a file holding a user NKey seed, for NKey authentication. Defaults to
	// none.
	NKeyFile string
	// TLS configures TLS: RootCAs to verify the server, Certificates for mutual TLS.
	// Setting it makes the connection require TLS. Defaults to nil: TLS when the URL's
	// scheme is tls:// or the server asks for it, verified against the system's roots.
	TLS *tls.Config
	// Options are further nats.go options, applied after the ones above. Defaults to none.
	Options []nats.Option
}

func (c NATSConfig) isZero() bool {
	return c.CredsFile == "" && c.NKeyFile == "" && c.TLS == nil && len(c.Options) == 0
}

func (c NATSConfig) validate(busURL string) error {
	switch {
	case busURL == "" && !c.isZero():
		return errors.New("NATS is set but Bus names no NATS server")
	case c.CredsFile != "" && c.NKeyFile != "":
		return errors.New("NATS.CredsFile and NATS.NKeyFile are exclusive: a credentials file holds its own NKey")
	}
	return nil
}

// options turns c into nats.go options; reading the NKey seed may fail.
func (c NATSConfig) options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("twice: NATS.NKeyFile %s: %w", c.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if c.TLS != nil {
		opts = append(opts, nats.Secure(c.TLS))
	}
	return append(opts, c.Options...), nil
}

// validSecret checks [Config.ClusterSecret]: empty, or long enough. The error never shows it.
func validSecret(s []byte) error {
	if len(s) > 0 && len(s) < bus.MinSecret {
		return fmt.Errorf("ClusterSecret is %d bytes; at least %d are required (for example the output of `openssl rand -base64 32`)",
			len(s), bus.MinSecret)
	}
	return nil
}

// busSecurity is what the bus of [Config.Bus] needs besides its address: the signer of
// [Config.ClusterSecret] (nil without one) and the NATS connection options.
func (n *Node) busSecurity() (*bus.Signer, []nats.Option, error) {
	var signer *bus.Signer
	if len(n.cfg.ClusterSecret) > 0 {
		var err error
		signer, err = bus.NewSigner(bus.SignerConfig{Secret: n.cfg.ClusterSecret, Service: n.cfg.Name, Logger: n.log})
		if err != nil {
			return nil, nil, err
		}
	}
	opts, err := n.cfg.NATS.options()
	return signer, opts, err
}

// BusStats counts the bus messages this instance checked against [Config.ClusterSecret]:
// those delivered, and those dropped as unsigned, forged or stale. All zero without a
// secret.
func (n *Node) BusStats() bus.SignerStats { return n.signer.Stats() }
