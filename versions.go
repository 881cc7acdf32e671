package twice

import "github.com/twicehq/twice/occ"

// Versions runs optimistic-concurrency updates (versioned rows) on the node's store; see
// package occ for the HTTP preconditions built on them.
func (n *Node) Versions() *occ.Versions { return occ.New(n.store) }
