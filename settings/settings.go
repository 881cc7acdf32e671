// Package settings is cluster-wide configuration: keys with typed values, shared by every
// instance of a service, with a version per key and the history of who changed what, when.
//
// Reads are served from a copy in each instance's memory, so they cost a map lookup. A
// change commits in the database and is announced on the bus, so every instance applies it
// within milliseconds; a poll every second catches what a lost signal missed. Watch calls
// a function on every instance when a key changes.
//
// Named settings rather than config, to keep it apart from twice.Config, which configures
// the node itself.
package settings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/notify"
	"github.com/twicehq/twice/store"
)

// Limits.
const (
	// MaxKey is the longest key, in bytes.
	MaxKey = 256
	// MaxValue is the largest value, in bytes of its text form.
	MaxValue = 64 << 10
	// MaxActor is the longest actor name, in bytes.
	MaxActor = 256
)

// Defaults.
const (
	DefaultPoll        = time.Second
	DefaultKeepHistory = 100
)

// Channel is the bus channel changes are announced on.
const Channel = "twice.settings"

// Errors.
var (
	ErrNotFound = errors.New("settings: no such key")
	// ErrConflict is returned by a Set or Delete whose IfVersion does not match.
	ErrConflict = errors.New("settings: version conflict")
	// ErrType is returned by a Set whose value is of another type than the setting's.
	ErrType = errors.New("settings: type mismatch")
	// ErrBadKey is returned for a key that is not 1 to MaxKey letters, digits, '.', '_',
	// ':', '/' or '-', starting with a letter or digit.
	ErrBadKey = errors.New("settings: bad key")
	// ErrBadValue is returned for a value that cannot be stored or parsed.
	ErrBadValue = errors.New("settings: bad value")
	// ErrTooLarge is returned for a value or actor over its limit.
	ErrTooLarge = errors.New("settings: too large")
	// ErrClosed is returned once the settings are closed.
	ErrClosed = errors.New("settings: closed")
)

var validKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]*$`)

// CheckKey reports whether key is acceptable, with an error that says why not.
func CheckKey(key string) error {
	if len(key) > MaxKey || !validKey.MatchString(key) {
		return fmt.Errorf("%w: %q must be 1 to %d letters, digits, '.', '_', ':', '/' or '-', starting with a letter or digit",
			ErrBadKey, truncate(key, 80), MaxKey)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Setting is one version of a key.
type Setting struct {
	Key  string
	Type Type
	// Value is the Go value: string, int64, float64, bool, time.Duration or
	// json.RawMessage, per Type. Nil when Deleted.
	Value any
	// Text is the value's canonical text form.
	Text string
	// Version counts the key's changes, from 1.
	Version int64
	// Rev orders the changes of all keys of the service.
	Rev int64
	// Deleted is set on the version that deleted the key.
	Deleted bool
	// UpdatedAt is when the change committed, in database time.
	UpdatedAt time.Time
	// Instance is the id of the instance (or tool) that made the change.
	Instance string
	// Actor is who asked for it, if the change said (see [SetOpts]).
	Actor string
}

// MarshalJSON writes the value as JSON natively (a duration as its text).
func (s Setting) MarshalJSON() ([]byte, error) {
	value := s.Value
	if d, ok := s.Value.(time.Duration); ok {
		value = d.String()
	}
	return json.Marshal(struct {
		Key       string    `json:"key"`
		Type      Type      `json:"type"`
		Value     any       `json:"value"`
		Version   int64     `json:"version"`
		Deleted   bool      `json:"deleted,omitempty"`
		UpdatedAt time.Time `json:"updated_at"`
		Instance  string    `json:"instance"`
		Actor     string    `json:"actor,omitempty"`
	}{s.Key, s.Type, value, s.Version, s.Deleted, s.UpdatedAt, s.Instance, s.Actor})
}

// Config configures [New]. What the settings work on comes in their [block.Deps]: the
// store and service (which scopes every key), the instance (recorded in the history of
// every change made through these settings) and the bus (without one, changes reach other
// instances at their next poll).
type Config struct {
	// Poll is how often the local copy is compared with the database, in case a bus signal
	// was lost, while the bus cannot vouch for its delivery (block.Deps.Backstop applies
	// while it can). Defaults to [DefaultPoll] (1 second).
	Poll time.Duration
	// KeepHistory is how many versions of each key the history keeps. Defaults to
	// [DefaultKeepHistory] (100).
	KeepHistory int
}

// Settings is one instance's view of its service's settings. It is safe for concurrent use.
type Settings struct {
	d   block.Deps
	st  *store.Store
	cfg Config
	q   queries
	log *slog.Logger

	mu       sync.RWMutex // protects vals, rev, watchers, nextW, warned
	vals     map[string]Setting
	rev      int64 // every change up to rev is applied
	watchers map[int]*watcher
	nextW    int
	warned   map[string]int64 // key → version whose type mismatch was logged

	refreshMu sync.Mutex // one refresh at a time, so changes apply in revision order

	notes *notify.Queue // calls the watchers, in the order changes were applied

	unsubscribe func()
	poller      *loop.Loop   // set by Start
	failing     loop.Failing // the poller's turns; only the poller touches it
	stopped     atomic.Bool
	startOnce   sync.Once
	closeOnce   sync.Once
}

// New returns the settings of d's service. It starts nothing and runs no statement:
// [Settings.Start] loads them and keeps them current. Writes work without Start.
func New(d block.Deps, cfg Config) (*Settings, error) {
	d = d.WithDefaults()
	if err := d.Validate("settings", true); err != nil {
		return nil, err
	}
	if cfg.Poll < 0 || cfg.KeepHistory < 0 {
		return nil, errors.New("settings: Poll and KeepHistory cannot be negative")
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.KeepHistory == 0 {
		cfg.KeepHistory = DefaultKeepHistory
	}
	return &Settings{d: d, st: d.Store, cfg: cfg, q: queriesFor(d.Store), log: d.Logger,
		vals: map[string]Setting{}, watchers: map[int]*watcher{}, warned: map[string]int64{},
		notes: notify.New(d.Logger, d.Panics, "settings: Watch callback")}, nil
}

// Start loads the service's settings and keeps them current: over the bus when it
// signals a change, and by polling every Config.Poll (every Deps.Backstop while the bus
// vouches for its delivery). If the first load fails (the
// database away), Start logs it and the poll keeps trying; until it succeeds, reads
// return their defaults. The node calls Start when the application first uses its
// settings; Close it when the instance stops.
func (s *Settings) Start(ctx context.Context) error {
	// Close runs startOnce first, so a Start after Close does nothing.
	s.startOnce.Do(func() {
		// The poller's first round is a poll later or at the first signal, which waits for
		// the first load to end (refreshMu).
		s.poller = loop.StartAfter(s.d.Poll(s.cfg.Poll), func(ctx context.Context) time.Duration {
			s.poll(ctx)
			return s.d.Poll(s.cfg.Poll)
		})
		if b := s.d.Bus; b != nil {
			// Subscribe before the first load, so no change falls between the two.
			s.unsubscribe = b.Subscribe(Channel, func(bus.Message) { s.poller.Kick() })
		}
		if err := s.refresh(ctx); err != nil {
			s.log.Warn("settings: cannot load the settings yet; reads return their defaults until a poll succeeds",
				"err", err)
		}
	})
	if s.closed() {
		return ErrClosed
	}
	return nil
}

// poll refreshes the local copy, on every signal and every Config.Poll. A refresh under way
// when Close stops the poller runs to its end.
func (s *Settings) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.StatementTimeout)
	err := s.refresh(ctx)
	cancel()
	s.failing.Report(s.log, err, "settings: cannot read changes; serving the last known values", "settings: reading changes again")
}

// refresh applies every change committed after the last one applied.
func (s *Settings) refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	s.mu.RLock()
	after := s.rev
	s.mu.RUnlock()
	rows, err := s.st.Reader().Query(ctx, s.q.changes, s.d.Service, after)
	if err != nil {
		return err
	}
	var changes []Setting
	for rows.Next() {
		v, err := s.scan(rows)
		if err != nil {
			rows.Close()
			return err
		}
		changes = append(changes, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, v := range changes {
		s.apply(v, true)
	}
	return nil
}

// apply installs v if it is newer than the local copy of its key and tells the watchers.
// advance moves the applied revision (only a refresh, which reads changes in order, may).
func (s *Settings) apply(v Setting, advance bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if advance && v.Rev > s.rev {
		s.rev = v.Rev
	}
	if cur, ok := s.vals[v.Key]; ok && cur.Version >= v.Version {
		return
	}
	s.vals[v.Key] = v
	for _, w := range s.watchers {
		if w.key == "" || w.key == v.Key {
			s.notes.Add(w.call(v))
		}
	}
}

// scan reads one row of [columns] and decodes its value. A value that cannot be decoded
// (written by hand, or by a newer version) is kept with a nil Value, so one bad row does not
// stop every other change from applying; the typed getters then return their default.
func (s *Settings) scan(r interface{ Scan(...any) error }) (Setting, error) {
	var v Setting
	var at store.Time
	if err := r.Scan(&v.Key, &v.Type, &v.Text, &v.Version, &v.Rev, &v.Deleted, &at, &v.Instance, &v.Actor); err != nil {
		return v, err
	}
	v.UpdatedAt = at.Time
	if v.Deleted {
		return v, nil
	}
	val, err := decode(v.Type, v.Text)
	if err != nil {
		s.log.Error("settings: stored value cannot be read", "key", v.Key, "version", v.Version, "err", err)
		return v, nil
	}
	v.Value = val
	return v, nil
}

// Get returns the current setting of key from the local copy.
func (s *Settings) Get(key string) (Setting, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.vals[key]
	if !ok || v.Deleted {
		return Setting{}, false
	}
	return v, true
}

// List returns the current settings whose keys start with prefix, sorted by key.
func (s *Settings) List(prefix string) []Setting {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Setting
	for k, v := range s.vals {
		if !v.Deleted && strings.HasPrefix(k, prefix) {
			out = append(out, v)
		}
	}
	sortByKey(out)
	return out
}

// typed returns key's value if it is one of types, or def. A value of another type is a
// mistake in the code or the settings, logged once per version.
func typed[T any](s *Settings, key string, def T, types ...Type) T {
	v, ok := s.Get(key)
	if !ok {
		return def
	}
	for _, t := range types {
		if v.Type != t {
			continue
		}
		if x, ok := v.Value.(T); ok {
			return x
		}
		if i, ok := v.Value.(int64); ok { // an int read as a float
			if f, ok := any(float64(i)).(T); ok {
				return f
			}
		}
	}
	s.mu.Lock()
	if s.warned[key] != v.Version {
		s.warned[key] = v.Version
		s.log.Warn("settings: value of another type than asked for; using the default", "key", key,
			"type", v.Type, "version", v.Version, "want", types[0])
	}
	s.mu.Unlock()
	return def
}

// String returns the string setting key, or def if it is not set (or not a string).
func (s *Settings) String(key, def string) string { return typed(s, key, def, TypeString) }

// Int returns the int setting key, or def if it is not set (or not an int).
func (s *Settings) Int(key string, def int64) int64 { return typed(s, key, def, TypeInt) }

// Float returns the float (or int) setting key, or def if it is not set.
func (s *Settings) Float(key string, def float64) float64 {
	return typed(s, key, def, TypeFloat, TypeInt)
}

// Bool returns the bool setting key, or def if it is not set (or not a bool).
func (s *Settings) Bool(key string, def bool) bool { return typed(s, key, def, TypeBool) }

// Duration returns the duration setting key, or def if it is not set (or not a duration).
func (s *Settings) Duration(key string, def time.Duration) time.Duration {
	return typed(s, key, def, TypeDuration)
}

// JSON decodes the JSON setting key into dst. It returns [ErrNotFound] if the key is not
// set and [ErrType] if it is not JSON.
func (s *Settings) JSON(key string, dst any) error {
	v, ok := s.Get(key)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	raw, ok := v.Value.(json.RawMessage)
	if !ok {
		return fmt.Errorf("%w: %q is a %s, not json", ErrType, key, v.Type)
	}
	return json.Unmarshal(raw, dst)
}

// Refresh reads the changes committed since the last one applied, for a caller that cannot
// wait for the bus or the next poll.
func (s *Settings) Refresh(ctx context.Context) error { return s.refresh(ctx) }

// Close stops keeping the local copy current and stops calling watchers. Reads keep
// returning the last known values. It waits for the watcher being called, if any, until
// ctx ends.
func (s *Settings) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		// A Start that has not run yet never will; one that has, started the loop.
		ran := true
		s.startOnce.Do(func() { ran = false })
		if s.unsubscribe != nil {
			s.unsubscribe()
		}
		s.stopped.Store(true)
		if ran {
			s.poller.Stop()
		}
		err = s.notes.Close(ctx)
	})
	return err
}

// Abandon is Close, for tests that crash an instance (see block.Block): Close writes
// nothing.
func (s *Settings) Abandon(ctx context.Context) { _ = s.Close(ctx) }

func (s *Settings) closed() bool { return s.stopped.Load() }
