package settings

import (
	"slices"
	"strings"
	"sync/atomic"
)

type watcher struct {
	key       string // "" for every key
	fn        func(Setting)
	cancelled atomic.Bool
}

// call is the call of w for v, made unless w is cancelled by then.
func (w *watcher) call(v Setting) func() {
	return func() {
		if !w.cancelled.Load() {
			w.fn(v)
		}
	}
}

// Watch calls fn with the current setting of key (if it is set) and then with every new
// version of it this instance applies, deletions included (Deleted set). Versions only go
// up; one superseded before this instance read it is skipped, since a watcher wants the
// configuration as it is, not every step to it (the history has those). Calls come in
// order, one at a time, on a goroutine shared by all watchers of these settings: keep fn
// quick. cancel stops the calls.
func (s *Settings) Watch(key string, fn func(Setting)) (cancel func()) {
	return s.watch(key, fn)
}

// WatchAll is [Settings.Watch] for every key: fn gets every current setting, then every
// change.
func (s *Settings) WatchAll(fn func(Setting)) (cancel func()) {
	return s.watch("", fn)
}

func (s *Settings) watch(key string, fn func(Setting)) func() {
	w := &watcher{key: key, fn: fn}
	s.mu.Lock()
	id := s.nextW
	s.nextW++
	s.watchers[id] = w
	// The current values are queued under the same lock as later changes, so fn sees
	// each version once and in order.
	var cur []Setting
	for k, v := range s.vals {
		if !v.Deleted && (key == "" || k == key) {
			cur = append(cur, v)
		}
	}
	sortByKey(cur)
	for _, v := range cur {
		s.notes.Add(w.call(v))
	}
	s.mu.Unlock()
	return func() {
		w.cancelled.Store(true)
		s.mu.Lock()
		delete(s.watchers, id)
		s.mu.Unlock()
	}
}

func sortByKey(vs []Setting) {
	slices.SortFunc(vs, func(a, b Setting) int { return strings.Compare(a.Key, b.Key) })
}
