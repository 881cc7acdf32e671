package twice

import "github.com/twicehq/twice/events"

// startEvents opens the service's event log: readers are woken over the node's bus, Shared
// groups share partitions through the node's leases, and the leader prunes old events.
func (n *Node) startEvents() error {
	l, err := events.New(n.store, events.Config{Service: n.cfg.Name, Instance: n.cfg.InstanceID,
		Bus: n.bus, Leases: n.leases, Retention: n.cfg.EventRetention, Logger: n.log, Panics: &n.panics})
	if err != nil {
		return err
	}
	n.events = l
	n.onClose(l.Close)
	n.leader.OnElected(l.Maintain)
	return nil
}

// Events is the service's durable event log: publish in your business transaction, consume
// in groups (shared, exactly-once, broadcast), event-sourced streams. See package events.
func (n *Node) Events() *events.Log { return n.events }
