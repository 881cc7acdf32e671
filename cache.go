package twice

import "github.com/twicehq/twice/cache"

// Caches are this instance's coherent caches. Make one per name with [cache.New]:
//
//	users, err := cache.New(node.Caches(), "users", cache.Config[int64, User]{Load: loadUser})
//
// and invalidate in the transaction that changes the data with users.InvalidateTx: every
// instance drops the keys once it commits.
func (n *Node) Caches() *cache.Manager { return n.blocks.caches.use(n) }
