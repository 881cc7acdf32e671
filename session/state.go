package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/httpx"
	"github.com/twicehq/twice/store"
)

// change is a pending write of one key: a new value, or its removal.
type change struct {
	value []byte
	del   bool
}

// Session is one request's view of its session. Get it with [From]; most code uses the
// package functions ([Get], [Put], …) on the request's context instead. It is safe for use
// by several goroutines of one request.
type Session struct {
	m         *Sessions
	hw        *httpx.HookWriter
	ua        string
	secure    bool
	hadCookie bool

	mu      sync.Mutex // protects everything below
	id      string     // "" until the session is stored
	hash    []byte     // hash of the current token
	token   string     // the current token, when the client must be sent it
	user    string
	values  map[string][]byte
	dirty   map[string]change
	expires time.Time
	loaded  time.Time // database time when the session was loaded; zero for a new one
	touch   bool      // the idle clock is due for a refresh
	send    bool      // the token changed: set the cookie
	clear   bool      // the session ended: delete the client's cookie
}

// From returns the request's session, or nil outside [Sessions.Middleware].
func From(ctx context.Context) *Session {
	s, _ := ctx.Value(ctxKey{}).(*Session)
	return s
}

// fetch loads the session with token hash; it reports whether there was a live one.
func (s *Session) fetch(ctx context.Context, hash []byte) (bool, error) {
	m := s.m
	defer m.observe(OpLoad, time.Now())
	rows, err := m.s.Reader().Query(ctx, m.q.load, m.s.NowArg(), m.d.Service, hash)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	found := false
	for rows.Next() {
		var id, user string
		var key *string
		var value []byte
		var seen, exp, now store.Time
		if err := rows.Scan(&id, &user, &seen, &exp, &now, &key, &value); err != nil {
			return false, err
		}
		if !found {
			found = true
			s.id, s.hash, s.user, s.expires, s.loaded = id, hash, user, exp.Time, now.Time
			s.touch = now.Sub(seen.Time) >= touchEvery(m.cfg.IdleTimeout)
		}
		if key != nil {
			s.values[*key] = value
		}
	}
	return found, rows.Err()
}

// touchEvery is how stale the idle clock may get before a request refreshes it, so reads
// do not each cost a write.
func touchEvery(idle time.Duration) time.Duration { return min(idle/10, time.Minute) }

// commit saves pending changes and, when w is not nil, sets the cookie on it. w is nil
// once the headers went out: a new session cannot be started then.
func (s *Session) commit(ctx context.Context, w http.ResponseWriter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.saveLocked(ctx, w != nil); err != nil {
		return err
	}
	if w == nil {
		return nil
	}
	if s.id != "" || s.clear {
		w.Header().Add("Vary", "Cookie")
	}
	switch {
	case s.send:
		http.SetCookie(w, s.m.cookie(s.token, s.expires, s.secure))
		// A shared cache must not hand the new token to someone else; the handler's own
		// Cache-Control, if any, is its decision.
		if w.Header().Get("Cache-Control") == "" {
			w.Header().Set("Cache-Control", `no-cache="Set-Cookie"`)
		}
	case s.clear:
		http.SetCookie(w, s.m.cookie("", time.Time{}, s.secure))
	}
	s.send, s.clear = false, false
	return nil
}

func (s *Session) saveLocked(ctx context.Context, canSend bool) error {
	m := s.m
	puts := 0
	for _, c := range s.dirty {
		if !c.del {
			puts++
		}
	}
	switch {
	case s.id == "" && puts == 0 && s.user == "":
		clear(s.dirty)
		return nil
	case s.id == "" && !canSend:
		m.log.Warn("session: values put after the response was written cannot start a session; dropped", "keys", len(s.dirty))
		clear(s.dirty)
		return nil
	case s.id != "" && len(s.dirty) == 0 && !s.touch:
		return nil
	}
	defer m.observe(OpSave, time.Now())
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range s.dirty {
			if !yield(k) {
				return
			}
		}
	})
	id, hash, token := s.id, s.hash, ""
	if id == "" {
		id = newID()
		token, hash = newToken()
	}
	// Writes of keys that a request begun after this one wrote since are skipped (see the
	// put statement); a new session has no such writes.
	var since any
	if s.id != "" && !s.loaded.IsZero() {
		since = m.s.TimeArg(s.loaded)
	}
	gone, kept := false, 0
	var latest time.Time // the newest of this save's writes
	var expires store.Time
	err := m.s.InTx(ctx, func(tx store.Tx) error {
		gone, kept = false, 0
		var err error
		if s.id == "" {
			err = tx.QueryRow(ctx, m.q.create, m.s.NowArg(), id, m.d.Service, hash, nullable(s.user), truncate(s.ua, 256),
				m.cfg.IdleTimeout.Milliseconds(), m.cfg.Lifetime.Milliseconds()).Scan(&expires)
		} else {
			err = tx.QueryRow(ctx, m.q.touch, m.s.NowArg(), id, hash).Scan(&expires)
		}
		if errors.Is(err, store.ErrNoRows) {
			gone = true
			return nil
		}
		if err != nil {
			return err
		}
		latest = time.Time{}
		for _, k := range keys {
			c := s.dirty[k]
			if c.del {
				if s.id != "" {
					_, err = tx.Exec(ctx, m.q.remove, id, k, since)
				}
			} else {
				var at store.Time
				err = tx.QueryRow(ctx, m.q.put, m.s.NowArg(), id, k, c.value, since).Scan(&at)
				switch {
				case errors.Is(err, store.ErrNoRows):
					kept, err = kept+1, nil
				case err == nil && at.Time.After(latest):
					latest = at.Time
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("session: save: %w", err)
	}
	clear(s.dirty)
	s.touch = false
	if kept > 0 {
		m.log.Debug("session: keys written by a later request kept their newer values", "keys", kept)
	}
	// A later save in this request may write its own keys again.
	if latest.After(s.loaded) {
		s.loaded = latest
	}
	if gone {
		// Renewed or destroyed by another request, or expired: this request's token no
		// longer names it, so its changes go nowhere. The cookie is left alone: the
		// browser may already hold the new token.
		m.log.Debug("session: the session ended or was renewed while the request ran; its changes were dropped")
		s.resetLocked()
		return nil
	}
	if s.id == "" {
		s.id, s.hash, s.token, s.send = id, hash, token, true
	}
	s.expires = expires.Time
	return nil
}

func (s *Session) resetLocked() {
	s.id, s.hash, s.token, s.user = "", nil, "", ""
	s.values, s.dirty = map[string][]byte{}, map[string]change{}
	s.touch, s.send = false, false
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func checkKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return ErrBadKey
	}
	return nil
}

// Put sets key to v, encoded as JSON. The change is saved with the response.
func (s *Session) Put(key string, v any) error {
	if s == nil {
		return ErrNoSession
	}
	if err := checkKey(key); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("session: encode %q: %w", key, err)
	}
	if len(b) > s.m.cfg.MaxValueBytes {
		return fmt.Errorf("%w: %q is %d bytes, the limit is %d", ErrTooLarge, key, len(b), s.m.cfg.MaxValueBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty[key] = change{value: b}
	s.values[key] = b
	return nil
}

// Remove deletes key. The change is saved with the response.
func (s *Session) Remove(key string) {
	if s == nil || checkKey(key) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty[key] = change{del: true}
	delete(s.values, key)
}

// raw returns key's encoded value.
func (s *Session) raw(key string) ([]byte, bool) {
	if s == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.values[key]
	return b, ok
}

// pop removes key and returns its encoded value. On a stored session the removal happens
// at once in the database, so of several concurrent requests only one gets the value.
func (s *Session) pop(ctx context.Context, key string) ([]byte, bool, error) {
	if s == nil {
		return nil, false, ErrNoSession
	}
	if err := checkKey(key); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.dirty[key]; ok {
		delete(s.values, key)
		if s.id != "" {
			s.dirty[key] = change{del: true} // the stored value, if any, goes too
		} else {
			delete(s.dirty, key)
		}
		return c.value, !c.del, nil
	}
	if s.id == "" {
		return nil, false, nil
	}
	delete(s.values, key)
	var b []byte
	err := s.m.s.QueryRow(ctx, s.m.q.pop, s.id, key).Scan(&b)
	if errors.Is(err, store.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("session: pop %q: %w", key, err)
	}
	return b, true, nil
}

// Keys returns the session's keys, sorted.
func (s *Session) Keys() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// UserID is the user the session belongs to, or "" for an anonymous one.
func (s *Session) UserID() string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

func (s *Session) headersWritten() bool { return s.hw != nil && s.hw.HeadersWritten() }

// Renew gives the session a new token at once: the old one stops working on every
// instance, and the response carries the new one. Call it at every privilege change
// (SetUser does) so that a token planted or seen before cannot ride along.
func (s *Session) Renew(ctx context.Context) error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewLocked(ctx, false)
}

// renewLocked swaps the token; with clearValues it deletes every stored value in the same
// transaction, so no request holding the old token can put one back in between.
func (s *Session) renewLocked(ctx context.Context, clearValues bool) error {
	if s.headersWritten() {
		return ErrHeadersWritten
	}
	if s.id == "" {
		return nil // a new session gets a fresh token when it is stored
	}
	m := s.m
	token, hash := newToken()
	var exp store.Time
	var err error
	if clearValues {
		err = m.s.InTx(ctx, func(tx store.Tx) error {
			if err := tx.QueryRow(ctx, m.q.renew, m.s.NowArg(), s.id, s.hash, hash, nullable(s.user)).Scan(&exp); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, m.q.clearValues, s.id)
			return err
		})
	} else {
		err = m.s.QueryRow(ctx, m.q.renew, m.s.NowArg(), s.id, s.hash, hash, nullable(s.user)).Scan(&exp)
	}
	if errors.Is(err, store.ErrNoRows) {
		// Ended meanwhile: carry on as a new session holding this request's changes.
		user, dirty := s.user, s.dirty
		s.resetLocked()
		s.user, s.dirty = user, dirty
		for k, c := range dirty {
			if !c.del {
				s.values[k] = c.value
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("session: renew: %w", err)
	}
	s.hash, s.token, s.expires, s.send, s.touch = hash, token, exp.Time, true, false
	return nil
}

// SetUser ties the session to user ("" to untie it) and renews its token, for login and
// logout. The user's sessions can then be listed and ended together.
//
// When the session already belonged to a user and user is another one, or "" (logout),
// every value goes with the old user: the stored ones and those put earlier in this request.
// A login from an anonymous session keeps its values (a guest's cart survives signing in);
// the token is new, so a planted cookie is useless, but values an attacker put in the
// session before planting it stay. Call [Session.Destroy] before SetUser to log in to an
// empty session instead.
func (s *Session) SetUser(ctx context.Context, user string) error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headersWritten() {
		return ErrHeadersWritten
	}
	prev, values, dirty := s.user, s.values, s.dirty
	clearValues := prev != "" && user != prev
	if clearValues {
		s.values, s.dirty = map[string][]byte{}, map[string]change{}
	}
	s.user = user
	if err := s.renewLocked(ctx, clearValues); err != nil {
		s.user, s.values, s.dirty = prev, values, dirty
		return err
	}
	return nil
}

// Destroy ends the session at once on every instance and deletes the client's cookie.
// Values put afterwards start a new session.
func (s *Session) Destroy(ctx context.Context) error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headersWritten() {
		return ErrHeadersWritten
	}
	if s.id != "" {
		m := s.m
		err := m.s.InTx(ctx, func(tx store.Tx) error {
			_, err := m.delete(ctx, tx, m.q.destroyValues, m.q.destroy, s.id)
			return err
		})
		if err != nil {
			return fmt.Errorf("session: destroy: %w", err)
		}
	}
	s.resetLocked()
	s.clear = s.hadCookie
	return nil
}

// Save writes pending changes now rather than with the response, for handlers that stream.
func (s *Session) Save(ctx context.Context) error {
	if s == nil {
		return ErrNoSession
	}
	var w http.ResponseWriter
	if s.hw != nil && !s.hw.HeadersWritten() {
		w = s.hw.ResponseWriter
	}
	return s.commit(ctx, w)
}

// Get returns the value of key in the request's session, decoded into a T. It reports
// false when the key is absent or its value does not decode into a T (logged as a
// warning).
func Get[T any](ctx context.Context, key string) (T, bool) {
	var v T
	s := From(ctx)
	b, ok := s.raw(key)
	if !ok {
		return v, false
	}
	if err := json.Unmarshal(b, &v); err != nil {
		s.m.log.Warn("session: stored value does not decode into the requested type", "key", key, "type", fmt.Sprintf("%T", v), "err", err)
		return v, false
	}
	return v, true
}

// Pop returns the value of key and removes it, for flash messages: of several concurrent
// requests of one session, only one gets it.
func Pop[T any](ctx context.Context, key string) (T, bool, error) {
	var v T
	s := From(ctx)
	b, ok, err := s.pop(ctx, key)
	if !ok || err != nil {
		return v, false, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, false, fmt.Errorf("session: decode %q into %T: %w", key, v, err)
	}
	return v, true, nil
}

// Put sets key to v in the request's session (see [Session.Put]).
func Put(ctx context.Context, key string, v any) error { return From(ctx).Put(key, v) }

// Remove deletes key from the request's session.
func Remove(ctx context.Context, key string) { From(ctx).Remove(key) }

// Renew gives the request's session a new token (see [Session.Renew]).
func Renew(ctx context.Context) error { return From(ctx).Renew(ctx) }

// SetUser ties the request's session to user and renews its token (see [Session.SetUser]).
func SetUser(ctx context.Context, user string) error { return From(ctx).SetUser(ctx, user) }

// UserID is the user of the request's session, or "".
func UserID(ctx context.Context) string { return From(ctx).UserID() }

// Keys lists the keys of the request's session.
func Keys(ctx context.Context) []string { return From(ctx).Keys() }

// Destroy ends the request's session (see [Session.Destroy]).
func Destroy(ctx context.Context) error { return From(ctx).Destroy(ctx) }
