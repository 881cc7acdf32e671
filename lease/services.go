package lease

import (
	"context"
	"fmt"

	"github.com/twicehq/twice/store"
)

// Services returns, in order, the services with a lease its holder has not released: held
// now, or by an instance that stopped without releasing it.
func Services(ctx context.Context, s *store.Store) ([]string, error) {
	out, err := store.Strings(ctx, s.Reader(), s.SQL(servicesSQL))
	if err != nil {
		return nil, fmt.Errorf("lease: list services: %w", err)
	}
	return out, nil
}
