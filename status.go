package twice

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// ServiceStatus is what the cluster looks like for one service: its instances, who leads,
// and the locks held. `twice status` prints it.
type ServiceStatus struct {
	Service     string       `json:"service"`
	Leader      string       `json:"leader"` // instance id; empty when nobody leads
	LeaderToken int64        `json:"leader_token,omitempty"`
	Members     []Member     `json:"members"`
	Locks       []lease.Info `json:"locks"`
}

// Status reads the status of service from s, or of every service when service is empty. It
// only reads; it does not register anything.
func Status(ctx context.Context, s *store.Store, service string) ([]ServiceStatus, error) {
	if err := store.NewMigrator(s, Components()...).Check(ctx); err != nil {
		if errors.Is(err, store.ErrMigrationsPending) {
			return nil, fmt.Errorf("twice: %s has no twice schema yet, or an old one: %w", s, err)
		}
		return nil, err
	}
	services := []string{service}
	if service == "" {
		var err error
		if services, err = cluster.Services(ctx, s); err != nil {
			return nil, err
		}
	}
	out := make([]ServiceStatus, 0, len(services))
	for _, svc := range services {
		st := ServiceStatus{Service: svc}
		var err error
		if st.Members, err = Members(ctx, s, svc); err != nil {
			return nil, err
		}
		l, err := lease.Lookup(ctx, s, svc, cluster.LeaderLease)
		if err != nil && !errors.Is(err, lease.ErrNotFound) {
			return nil, err
		}
		if l.Held() {
			st.Leader, st.LeaderToken = l.Holder, l.Token
		}
		held, err := lease.List(ctx, s, svc, "")
		if err != nil {
			return nil, err
		}
		st.Locks = slices.DeleteFunc(held, func(i lease.Info) bool { return i.Name == cluster.LeaderLease })
		out = append(out, st)
	}
	return out, nil
}
