package twice

import (
	"slices"

	"github.com/twicehq/twice/internal/nodehook"
)

// What package metrics reads of a node without starting its blocks (see package nodehook).
func init() {
	nodehook.Blocks = func(node any) (started, unused []any) { return node.(*Node).blockList() }
	nodehook.LostSignals = func(node any) uint64 { return node.(*Node).cuttable.LostSignals() }
}

// blockList returns the blocks the application has started, and the others.
func (n *Node) blockList() (started, unused []any) {
	n.blocks.mu.Lock()
	defer n.blocks.mu.Unlock()
	for _, b := range n.blocks.made {
		if slices.Contains(n.blocks.started, b) {
			started = append(started, b)
		} else {
			unused = append(unused, b)
		}
	}
	return started, unused
}
