package twice

import "github.com/twicehq/twice/workflow"

// Workflows is the service's durable workflows: register definitions with
// [workflow.Register], start them (also inside your own transaction), cancel them and read
// their history. Workflows run as jobs of [Node.Jobs], which it starts: an instance with a
// definition registered runs workflows of it, and one that dies has its workflows resumed
// on a live instance, without running their completed steps again.
func (n *Node) Workflows() *workflow.Engine {
	n.Jobs()
	return n.blocks.flows.use(n)
}
