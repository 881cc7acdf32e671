package twice

import (
	"fmt"

	"github.com/twicehq/twice/forward"
	"github.com/twicehq/twice/partition"
)

// Partitions is this instance's door to partition sets: join one with
// Partitions().Join(ctx, partition.Config{…}) and its partitions are spread over the
// instances that joined it, each held by one instance at a time under a fencing token.
// [partition.Set].Owner says which instance owns a key and where it is reachable
// (Config.AdvertiseAddr). Close hands this instance's partitions over at once.
func (n *Node) Partitions() *partition.Manager { return n.blocks.parts.use(n) }

// LocateIn adapts a partition set to [forward.Config].Locate: a key's owner is its
// partition's owner in set, read from memory, and a partition without a live owner (a
// hand-over, a death) is [forward.ErrNoOwner], which the forwarder answers with 503 and
// Retry-After.
func LocateIn(set *partition.Set) func(key string) (forward.Target, error) {
	return func(key string) (forward.Target, error) {
		o, err := set.Owner(key)
		if err != nil {
			return forward.Target{}, fmt.Errorf("%w: %w", forward.ErrNoOwner, err)
		}
		return forward.Target{Instance: o.Instance, Addr: o.Addr, Self: o.Self}, nil
	}
}
