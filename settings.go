package twice

import "github.com/twicehq/twice/settings"

// Settings is the service's cluster-wide configuration: typed values with versions and
// history, read from this instance's memory and kept current over the bus. The same
// settings are read and changed with `twice config`. The first call loads them.
func (n *Node) Settings() *settings.Settings { return n.blocks.settings.use(n) }
