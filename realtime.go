package twice

import "github.com/twicehq/twice/realtime"

// Realtime is the service's real-time hub: a WebSocket endpoint (Handler) that clients
// connect to on any instance, and messages to a room (Publish, PublishTx in the caller's
// transaction) or a user (SendToUser) that reach their connections on every instance. A
// client that reconnects, to any instance, gets exactly what it missed from the room's
// history in the database, or is told recovery is impossible. Its connections are in
// [Node.Presence]. The first call starts the presence, then the hub.
func (n *Node) Realtime() *realtime.Hub {
	n.Presence()
	return n.blocks.realtime.use(n)
}
