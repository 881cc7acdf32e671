package instance

import (
	"context"
	"fmt"
	"slices"

	"github.com/twicehq/twice/presence"
)

// Presence is the workload "presence": the instance connects each of Users, and a user
// named by its own instance id, once each, in Rooms, and reports "connected"; it watches
// every room and reports each join and leave its view sees as a "presence" event whose Key
// is "joined ROOM USER" or "left ROOM USER" (ROOM empty for the service).
type Presence struct {
	Users []string `json:"users,omitempty"`
	Rooms []string `json:"rooms,omitempty"`
}

// Name implements Workload.
func (Presence) Name() string { return "presence" }

func (w Presence) start(ctx context.Context, in *env) (func(), error) {
	p := in.node.Presence()
	cancel := p.WatchAll(func(e presence.Event) {
		in.emit(Event{Event: "presence", Key: fmt.Sprintf("%s %s %s", e.Kind, e.Room, e.User)})
	})
	for _, u := range slices.Concat(w.Users, []string{in.node.ID()}) {
		if _, err := p.Connect(ctx, u, w.Rooms...); err != nil {
			cancel()
			return nil, err
		}
	}
	in.emit(Event{Event: "connected"})
	return cancel, nil
}
