package twice

// Panics is how many panics the node recovered from code of yours that it runs on its own
// goroutines: job workers, event handlers, OnElected callbacks, settings watchers, bus
// subscribers, cache loaders, health checks, heartbeat-stall callbacks. Each was logged at
// Error with its stack and handled as that code's failure; none ended the process. Alert on
// it growing.
func (n *Node) Panics() int64 { return n.panics.Load() }
