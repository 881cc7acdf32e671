package twice

import (
	"context"
	"time"

	"github.com/twicehq/twice/session"
)

// startSessions makes the node's session store; its leader prunes expired sessions.
func (n *Node) startSessions() error {
	cfg := n.cfg.Sessions
	cfg.Service, cfg.Logger = n.cfg.Name, n.log
	var err error
	if n.sessions, err = session.New(n.store, cfg); err != nil {
		return err
	}
	n.whileLeader("sessions", n.sessions.PruneInterval(), n.sessions.Prune)
	return nil
}

// Sessions is the service's session store: server-side sessions shared by every instance
// (see package session). Wrap handlers with its Middleware.
func (n *Node) Sessions() *session.Sessions { return n.sessions }

// whileLeader runs fn every interval while this instance leads, for cluster-wide
// housekeeping that must not run on every instance (pruning expired rows). fn's work must
// be safe to repeat: two leaders can overlap by a moment.
func (n *Node) whileLeader(what string, every time.Duration, fn func(context.Context) (int64, error)) {
	n.leader.OnElected(func(ctx context.Context) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if k, err := fn(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("twice: housekeeping failed", "what", what, "err", err)
			} else if k > 0 {
				n.log.Debug("twice: pruned expired rows", "what", what, "count", k)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}
