package twice

import "github.com/twicehq/twice/presence"

// Presence says which user is connected where across the instances of the service:
// connections held by this instance, in rooms, and a view of every instance's, read from
// this instance's memory and kept current over the bus, with join and leave events. A
// crashed instance's connections vanish once the cluster counts it dead; Close removes
// this instance's. The first call clears what a previous process of this instance left
// and loads the view.
func (n *Node) Presence() *presence.Presence { return n.blocks.presence.use(n) }
