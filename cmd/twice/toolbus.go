package main

import (
	"context"
	"fmt"
	"os"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/store"
)

// envSecret names the cluster secret the twice command signs its signals with (a setting
// changed, a workflow cancelled): the same bytes as the instances' Config.ClusterSecret.
// Instances that have a secret drop unsigned signals, so without it a running instance
// hears of the change at its next poll rather than at once.
const envSecret = "TWICE_CLUSTER_SECRET"

// toolBus opens service's store-native bus in s for the command, as instance, signing
// with $TWICE_CLUSTER_SECRET when it is set.
func toolBus(ctx context.Context, s *store.Store, service, instance string) (bus.Bus, error) {
	var signer *bus.Signer
	if secret := os.Getenv(envSecret); secret != "" {
		var err error
		if signer, err = bus.NewSigner(bus.SignerConfig{Secret: []byte(secret), Service: service}); err != nil {
			return nil, fmt.Errorf("$%s: %w", envSecret, err)
		}
	}
	return bus.NewStore(ctx, s, bus.Config{Service: service, Instance: instance, Signer: signer})
}

// toolInstance is the instance id under which the tool (twice-cli, twice-dashboard,
// twice-bench) of this machine acts on a service: what its jobs, settings and signals are
// recorded under.
func toolInstance(tool string) string {
	host, _ := os.Hostname()
	return tool + "@" + host
}
