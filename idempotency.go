package twice

import (
	"net/http"

	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/session"
)

// startIdempotency makes the node's idempotency keys; its leader prunes expired keys.
func (n *Node) startIdempotency() error {
	cfg := n.cfg.Idempotency
	cfg.Service, cfg.Instance, cfg.Logger = n.cfg.Name, n.cfg.InstanceID, n.log
	if cfg.Scope == nil {
		cfg.Scope = UserScope
	}
	var err error
	if n.idem, err = idempotency.New(n.store, cfg); err != nil {
		return err
	}
	n.whileLeader("idempotency", n.idem.PruneInterval(), n.idem.Prune)
	n.onClose(n.idem.Close)
	return nil
}

// Idempotency is the service's Idempotency-Key store, shared by every instance (see package
// idempotency). Wrap handlers with its Middleware, or serve handlers that write to the same
// database with its HandlerTx.
func (n *Node) Idempotency() *idempotency.Keys { return n.idem }

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
