package twice

import (
	"net/http"

	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/session"
)

// Idempotency is the service's Idempotency-Key store, shared by every instance (see package
// idempotency). Wrap handlers with its Middleware, or serve handlers that write to the same
// database with its HandlerTx. The leader prunes expired keys.
func (n *Node) Idempotency() *idempotency.Keys { return n.blocks.idem.use(n) }

// idempotency is Config.Idempotency with the node's default scope.
func (c Config) idempotency() idempotency.Config {
	ic := c.Idempotency
	if ic.Scope == nil {
		ic.Scope = UserScope
	}
	return ic
}

// UserScope is the node's default idempotency scope: the user of the request's twice
// session, so two users never share a key space and a renewed session token keeps its
// user's keys. It is "" (the key is ignored, see idempotency.Config.Scope) for anonymous
// requests, and for every request when the session middleware runs after the idempotency
// middleware instead of before it (the session middleware then logs a warning). Apps
// authenticating otherwise set Config.Idempotency.Scope to their own principal.
func UserScope(r *http.Request) string {
	if u := session.UserID(r.Context()); u != "" {
		return "user:" + u
	}
	return ""
}
