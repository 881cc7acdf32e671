package cluster

import (
	"context"
	"slices"

	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// Services returns, in order, every service in s's cluster: with a member, or with a lease
// not released (an instance that holds one, or died holding one).
func Services(ctx context.Context, s *store.Store) ([]string, error) {
	members, err := store.Services(ctx, s, Component())
	if err != nil {
		return nil, err
	}
	holders, err := lease.Services(ctx, s)
	if err != nil {
		return nil, err
	}
	all := append(members, holders...)
	slices.Sort(all)
	return slices.Compact(all), nil
}
