package twice

import "github.com/twicehq/twice/session"

// Sessions is the service's session store: server-side sessions shared by every instance
// (see package session). Wrap handlers with its Middleware. The leader prunes expired
// sessions.
func (n *Node) Sessions() *session.Sessions { return n.blocks.sessions.use(n) }
