package presence

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
)

// Kind says whether an [Event] is a join or a leave.
type Kind string

const (
	// Joined: the user's first connection in the room appeared, on any instance.
	Joined Kind = "joined"
	// Left: the user's last connection in the room went: closed, taken out of the room, or
	// lost with its instance.
	Left Kind = "left"
)

// Event is a user joining or leaving a room, as this instance's view saw it change.
type Event struct {
	Kind Kind   `json:"kind"`
	Room string `json:"room"` // "" for the service: the user came online or went offline
	User string `json:"user"`
}

// diff lists who joined and left which rooms from old to nv, by room then user, leaves
// first.
func diff(old, nv *view) []Event {
	var out []Event
	for room, users := range old.rooms {
		for u := range users {
			if nv.rooms[room][u] == 0 {
				out = append(out, Event{Kind: Left, Room: room, User: u})
			}
		}
	}
	for room, users := range nv.rooms {
		for u := range users {
			if old.rooms[room][u] == 0 {
				out = append(out, Event{Kind: Joined, Room: room, User: u})
			}
		}
	}
	slices.SortFunc(out, func(a, b Event) int {
		return cmp.Or(strings.Compare(string(b.Kind), string(a.Kind)), strings.Compare(a.Room, b.Room), strings.Compare(a.User, b.User))
	})
	return out
}

type watcher struct {
	room      string
	all       bool
	fn        func(Event)
	cancelled atomic.Bool
}

// call is the call of w for ev, made unless w is cancelled by then.
func (w *watcher) call(ev Event) func() {
	return func() {
		if !w.cancelled.Load() {
			w.fn(ev)
		}
	}
}

// Watch calls fn on this instance for every user who joins or leaves room ("" for the
// service as a whole: a user comes online or goes offline): first a Joined for each user in
// it now, then every change this instance's view sees, in order, one at a time, on a
// goroutine shared by all watchers of this presence: keep fn quick. A user who joins and
// leaves between two reads of the view is not reported; a user who is in the room stays
// in it however their connections move. A panic in fn is logged and counted; later
// calls go on. cancel stops the calls.
func (p *Presence) Watch(room string, fn func(Event)) (cancel func()) {
	return p.watch(&watcher{room: room, fn: fn})
}

// WatchAll is [Presence.Watch] for every room, the service's ("") included.
func (p *Presence) WatchAll(fn func(Event)) (cancel func()) {
	return p.watch(&watcher{all: true, fn: fn})
}

func (p *Presence) watch(w *watcher) func() {
	p.mu.Lock()
	id := p.nextW
	p.nextW++
	p.watchers[id] = w
	// The current members are queued under the same lock as later changes, so fn sees
	// each join and leave once and in order.
	for _, room := range slices.Sorted(maps.Keys(p.v.rooms)) {
		if w.all || room == w.room {
			for _, u := range slices.Sorted(maps.Keys(p.v.rooms[room])) {
				p.notes.Add(w.call(Event{Kind: Joined, Room: room, User: u}))
			}
		}
	}
	p.mu.Unlock()
	return func() {
		w.cancelled.Store(true)
		p.mu.Lock()
		delete(p.watchers, id)
		p.mu.Unlock()
	}
}
