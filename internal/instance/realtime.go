package instance

import (
	"context"
	"errors"
	"net/http"

	"github.com/twicehq/twice"
)

// Realtime is the workload "realtime": the instance serves the node's real-time hub at
// /realtime on its HTTP port (see the "http" event), where a client is the user named by
// the "user" query parameter and may subscribe and publish to any room, and the
// JavaScript client at /twice-realtime.js.
type Realtime struct{}

// Name implements Workload.
func (Realtime) Name() string { return "realtime" }

func (Realtime) configure(cfg *twice.Config) {
	cfg.Realtime.Authenticate = func(r *http.Request) (string, error) {
		if u := r.URL.Query().Get("user"); u != "" {
			return u, nil
		}
		return "", errors.New("no user")
	}
	cfg.Realtime.CanPublish = func(context.Context, string, string) error { return nil }
}

func (Realtime) start(_ context.Context, in *env) (func(), error) {
	h := in.node.Realtime()
	in.handle("/realtime", h.Handler())
	in.handle("/twice-realtime.js", h.Script())
	return func() {}, nil
}
