package twice

import "github.com/twicehq/twice/partition"

// Partitions is this instance's door to partition sets: join one with
// Partitions().Join(ctx, partition.Config{…}) and its partitions are spread over the
// instances that joined it, each held by one instance at a time under a fencing token.
// [partition.Set].Owner says which instance owns a key and where it is reachable
// (Config.AdvertiseAddr). Close hands this instance's partitions over at once.
func (n *Node) Partitions() *partition.Manager { return n.blocks.parts.use(n) }
