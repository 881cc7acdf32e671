package twice

import "github.com/twicehq/twice/events"

// Events is the service's durable event log: publish in your business transaction, consume
// in groups (shared, exactly-once, broadcast), event-sourced streams. See package events.
// Readers are woken over the bus; the leader prunes old events.
func (n *Node) Events() *events.Log { return n.blocks.events.use(n) }
