// Package session keeps server-side HTTP sessions in the database the service already has,
// so every instance sees the same session and no update is lost between them.
//
// Each value is its own row: two requests of one session that change different keys both
// keep their change, and concurrent changes to one key end with one of them whole, never
// with a whole-session overwrite (the failure of blob stores such as scs's and Spring
// Session's). A request never writes over a key that a request begun after it has written,
// so an instance that pauses mid-request cannot put an old value back when it wakes. The cookie carries a 256-bit random token; the database keeps only its
// SHA-256, so reading the table gives nobody a session.
//
//	mux.Handle("/", node.Sessions().Middleware(app))
//
//	func login(w http.ResponseWriter, r *http.Request) {
//		ctx := r.Context()
//		if err := session.SetUser(ctx, "42"); err != nil { … } // new token: fixation-proof
//		_ = session.Put(ctx, "theme", "dark")
//	}
//	theme, ok := session.Get[string](ctx, "theme")
//
// Changes are written in one short transaction just before the response's headers go out,
// so the client never sees a response whose session change was not stored.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/httpx"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// Defaults of [Config].
const (
	DefaultCookieName    = "twice_session"
	DefaultIdleTimeout   = 24 * time.Hour
	DefaultLifetime      = 7 * 24 * time.Hour
	DefaultMaxValueBytes = 64 << 10
	DefaultPruneInterval = time.Minute
)

// MaxKeyLen is the longest key, in bytes.
const MaxKeyLen = 256

// SecureMode says when the cookie gets the Secure attribute.
type SecureMode int

const (
	// SecureAuto sets Secure when the request came over TLS, or from a trusted proxy whose
	// X-Forwarded-Proto or Forwarded proto= says https: the value the nearest trusted proxy
	// appended, not the client's (see [Config.TrustedProxies]).
	SecureAuto SecureMode = iota
	// SecureAlways always sets Secure.
	SecureAlways
	// SecureNever never sets Secure: plain-HTTP development only.
	SecureNever
)

// Errors.
var (
	// ErrNoSession is returned when the context carries no session: the handler is not
	// behind [Sessions.Middleware].
	ErrNoSession = errors.New("session: no session in context (is the handler behind Sessions.Middleware?)")
	// ErrHeadersWritten is returned by Renew, SetUser and Destroy after the response's
	// headers went out: the cookie could no longer follow the change.
	ErrHeadersWritten = errors.New("session: response headers already written; renew or destroy before writing the response")
	// ErrTooLarge is returned by Put for a value over Config.MaxValueBytes.
	ErrTooLarge = errors.New("session: value too large")
	// ErrBadKey is returned for an empty key or one over MaxKeyLen bytes.
	ErrBadKey = errors.New("session: key must be 1 to 256 bytes")
)

// Config configures [Sessions].
//
// What the sessions work on (store, service, logger) comes in their [block.Deps]; the
// service scopes sessions, so services sharing a database never see each other's.
type Config struct {
	// CookieName is the cookie's name. Defaults to [DefaultCookieName]. Behind HTTPS, a
	// name starting with "__Host-" (with SecureAlways) stops a sibling subdomain from
	// planting its own session cookie.
	CookieName string
	// Domain is the cookie's Domain attribute. Defaults to empty: the request's host only.
	Domain string
	// Path is the cookie's Path. Defaults to "/".
	Path string
	// SameSite is the cookie's SameSite attribute. Defaults to http.SameSiteLaxMode.
	SameSite http.SameSite
	// Secure says when the cookie is marked Secure. Defaults to [SecureAuto].
	Secure SecureMode
	// TrustedProxies are the addresses whose X-Forwarded-Proto and Forwarded headers are
	// believed. Of each header only the values trusted proxies appended count: the
	// rightmost, and those left of it while X-Forwarded-For (or for=) names a trusted
	// proxy as the hop; either header saying https is enough. Defaults to none: only the
	// connection itself counts, and a request that says it came through an HTTPS proxy is
	// logged once as a warning.
	TrustedProxies []netip.Prefix
	// ScriptAccess leaves out HttpOnly, letting page scripts read the cookie. Defaults to
	// false: the cookie is HttpOnly.
	ScriptAccess bool
	// BrowserSession makes the cookie last until the browser closes rather than until the
	// session's absolute expiry. Defaults to false.
	BrowserSession bool
	// IdleTimeout ends a session not used for this long, measured in database time; use
	// refreshes it at most every tenth of it (and at most every minute). Defaults to
	// [DefaultIdleTimeout].
	IdleTimeout time.Duration
	// Lifetime ends a session this long after it began, however much it is used. Defaults
	// to [DefaultLifetime].
	Lifetime time.Duration
	// MaxValueBytes bounds one encoded value. Defaults to [DefaultMaxValueBytes].
	MaxValueBytes int
	// PruneInterval is how often the leader deletes expired sessions. Defaults to
	// [DefaultPruneInterval].
	PruneInterval time.Duration
	// ErrorHandler answers a request whose session could not be read or written (the
	// database is unreachable). Defaults to a 500 problem+json response.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
}

func (c Config) withDefaults() Config {
	if c.CookieName == "" {
		c.CookieName = DefaultCookieName
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.SameSite == 0 {
		c.SameSite = http.SameSiteLaxMode
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Lifetime == 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.ErrorHandler == nil {
		c.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) {
			httpx.WriteProblem(w, httpx.Problem{Type: "session-store-unavailable", Status: http.StatusInternalServerError,
				Detail: "the session could not be read or saved; try again"})
		}
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.IdleTimeout < time.Second || c.Lifetime < time.Second {
		errs = append(errs, fmt.Errorf("IdleTimeout %v and Lifetime %v must be at least a second", c.IdleTimeout, c.Lifetime))
	}
	if c.Secure < SecureAuto || c.Secure > SecureNever {
		errs = append(errs, fmt.Errorf("unknown Secure mode %d", c.Secure))
	}
	if c.SameSite == http.SameSiteNoneMode && c.Secure == SecureNever {
		errs = append(errs, errors.New("SameSite=None needs a Secure cookie; browsers drop it otherwise"))
	}
	// Browsers only accept prefixed names on cookies that keep the prefix's promise.
	if strings.HasPrefix(c.CookieName, "__Host-") && (c.Secure != SecureAlways || c.Domain != "" || c.Path != "/") {
		errs = append(errs, errors.New("a __Host- cookie needs Secure: SecureAlways, no Domain and Path /"))
	}
	if strings.HasPrefix(c.CookieName, "__Secure-") && c.Secure != SecureAlways {
		errs = append(errs, errors.New("a __Secure- cookie needs Secure: SecureAlways"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("session: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// Sessions is the session store of one service. Get it from the node (twice.Node.Sessions)
// or make one with [New] on a migrated store. It is safe for concurrent use.
type Sessions struct {
	d   block.Deps
	s   *store.Store
	cfg Config
	q   queries
	log *slog.Logger

	warnedProxy atomic.Bool                                      // the missing-TrustedProxies warning was logged
	warnedOrder atomic.Bool                                      // the middleware-order warning was logged
	observer    atomic.Pointer[func(op string, d time.Duration)] // see Observe; nil for none
}

// New returns the sessions of d's service in d's store, whose schema must include
// [Component]. It starts nothing and runs no statement.
func New(d block.Deps, cfg Config) (*Sessions, error) {
	d = d.WithDefaults()
	if err := d.Validate("session", false); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Sessions{d: d, s: d.Store, cfg: cfg, q: queriesFor(d.Store), log: d.Logger}, nil
}

// Start has nothing to start: sessions work in the requests that use them. It is there
// for the node, which starts every block it uses.
func (m *Sessions) Start(context.Context) error { return nil }

// Close has nothing to drain: every change is saved before its response goes out.
func (m *Sessions) Close(context.Context) error { return nil }

// Abandon, as a crash would, ends what Close ends: nothing (see block.Block).
func (m *Sessions) Abandon(context.Context) {}

// Lead deletes expired sessions at once and then every PruneInterval, while this
// instance leads, until ctx ends.
func (m *Sessions) Lead(ctx context.Context) {
	prune := func(ctx context.Context) {
		if n, err := m.Prune(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("session: pruning expired sessions failed", "err", err)
		} else if n > 0 {
			m.log.Debug("session: pruned expired sessions", "count", n)
		}
	}
	prune(ctx)
	loop.Every(ctx, m.cfg.PruneInterval, prune)
}

// Config returns the configuration with defaults filled in.
func (m *Sessions) Config() Config { return m.cfg }

type ctxKey struct{}

// Middleware loads the request's session (if its cookie names a live one), puts it in the
// request's context for [Get], [Put] and the rest, and saves the changes in one
// transaction just before the response's headers go out; the cookie is set only when the
// token changes. A malformed cookie counts as no session. Works with any router that takes
// func(http.Handler) http.Handler (net/http, chi, echo through echo.WrapMiddleware).
func (m *Sessions) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if httpx.Unscoped(r.Context()) && !m.warnedOrder.Swap(true) {
			m.log.Warn("session: an idempotency middleware ran before the session middleware and found no user to scope its key to; " +
				"if its scope is the session's user (the node's default), put Sessions.Middleware outside Idempotency.Middleware")
		}
		s, err := m.load(r)
		if err != nil {
			m.log.Error("session: cannot load the session", "err", err)
			m.cfg.ErrorHandler(w, r, err)
			return
		}
		hw := &httpx.HookWriter{ResponseWriter: w}
		s.hw = hw
		failed := false
		hw.Before = func() bool {
			if err := s.commit(r.Context(), w); err != nil {
				m.log.Error("session: cannot save the session", "err", err)
				m.cfg.ErrorHandler(w, r, err)
				failed = true
				return false
			}
			return true
		}
		next.ServeHTTP(hw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
		hw.Finish()
		if failed {
			return // the client was told the request failed; its changes must not land later
		}
		// Changes made after the headers went out are still saved; only a new session could
		// not reach the client, and commit says so.
		if err := s.commit(context.WithoutCancel(r.Context()), nil); err != nil {
			m.log.Error("session: cannot save changes made after the response was written", "err", err)
		}
	})
}

// load reads the session named by r's cookie; a missing, malformed or dead one gives a
// new, empty session that is stored only once something is put in it.
func (m *Sessions) load(r *http.Request) (*Session, error) {
	s := &Session{m: m, values: map[string][]byte{}, dirty: map[string]change{}, ua: r.UserAgent(),
		secure: m.secure(r)}
	// A browser may send several cookies of one name (another path, a parent domain);
	// the first that names a live session wins, and only a few are tried.
	for i, c := range r.CookiesNamed(m.cfg.CookieName) {
		if i == maxCookies {
			break
		}
		s.hadCookie = true
		hash, err := DecodeToken(c.Value)
		if err != nil {
			m.log.Debug("session: ignoring a malformed cookie", "len", len(c.Value), "remote", r.RemoteAddr)
			continue
		}
		found, err := s.fetch(r.Context(), hash)
		if err != nil {
			return nil, err
		}
		if found {
			return s, nil
		}
		m.log.Debug("session: cookie names no live session", "remote", r.RemoteAddr)
	}
	return s, nil
}

// maxCookies bounds the session cookies of one request that are looked up.
const maxCookies = 3

func (m *Sessions) secure(r *http.Request) bool {
	switch m.cfg.Secure {
	case SecureAlways:
		return true
	case SecureNever:
		return false
	}
	if overTLS(r, m.cfg.TrustedProxies) {
		return true
	}
	if len(m.cfg.TrustedProxies) == 0 && claimsHTTPS(r) && !m.warnedProxy.Swap(true) {
		m.log.Warn("session: a request says it came through an HTTPS proxy, but Sessions.TrustedProxies is empty, so the session cookie is not marked Secure; "+
			"behind a TLS-terminating proxy, set TrustedProxies to its addresses or Secure to SecureAlways", "remote", r.RemoteAddr)
	}
	return false
}

// cookie returns the session cookie carrying token, or one that deletes it when token is
// empty.
func (m *Sessions) cookie(token string, expires time.Time, secure bool) *http.Cookie {
	c := &http.Cookie{Name: m.cfg.CookieName, Value: token, Path: m.cfg.Path, Domain: m.cfg.Domain,
		Secure: secure, HttpOnly: !m.cfg.ScriptAccess, SameSite: m.cfg.SameSite}
	switch {
	case token == "":
		c.MaxAge = -1
	case !m.cfg.BrowserSession:
		c.Expires = expires.UTC()
		c.MaxAge = max(1, int(time.Until(expires).Seconds()))
	}
	return c
}

// Info describes one live session, as listed by [Sessions.List].
type Info struct {
	// ID identifies the session to [Sessions.DestroyID]. It is not its token and grants
	// nothing.
	ID        string    `json:"id"`
	UserAgent string    `json:"user_agent"`
	CreatedAt time.Time `json:"created_at"`
	LastSeen  time.Time `json:"last_seen"`
	// ExpiresAt is the absolute limit; Deadline the moment it ends unless used again.
	ExpiresAt time.Time `json:"expires_at"`
	Deadline  time.Time `json:"deadline"`
}

// List returns the live sessions of user, most recently used first.
func (m *Sessions) List(ctx context.Context, user string) ([]Info, error) {
	rows, err := m.s.Reader().Query(ctx, m.q.list, m.s.NowArg(), m.d.Service, user)
	if err != nil {
		return nil, fmt.Errorf("session: list: %w", err)
	}
	defer rows.Close()
	var out []Info
	for rows.Next() {
		var i Info
		var c, seen, exp, dl store.Time
		if err := rows.Scan(&i.ID, &i.UserAgent, &c, &seen, &exp, &dl); err != nil {
			return nil, err
		}
		i.CreatedAt, i.LastSeen, i.ExpiresAt, i.Deadline = c.Time, seen.Time, exp.Time, dl.Time
		out = append(out, i)
	}
	return out, rows.Err()
}

// Counts are the live sessions of a service.
type Counts struct {
	// Sessions counts the live sessions, signed in or not.
	Sessions int64 `json:"sessions"`
	// Users counts the distinct users signed in to at least one.
	Users int64 `json:"users"`
}

// Count counts the service's live sessions and the users signed in to them, by the index
// on the sessions' deadlines: a reading for a dashboard taken now and then, not one per
// request. The sessions of [Sessions.SCSStore] are not counted.
func (m *Sessions) Count(ctx context.Context) (Counts, error) {
	var c Counts
	if err := m.s.Reader().QueryRow(ctx, m.q.count, m.s.NowArg(), m.d.Service).Scan(&c.Sessions, &c.Users); err != nil {
		return Counts{}, fmt.Errorf("session: count: %w", err)
	}
	return c, nil
}

// DestroyUser ends every session of user at once, on every instance ("log out
// everywhere"), and returns how many there were. Call it when a password changes, in the
// same transaction with [Sessions.DestroyUserTx].
func (m *Sessions) DestroyUser(ctx context.Context, user string) (int64, error) {
	var n int64
	err := m.s.InTx(ctx, func(tx store.Tx) (err error) {
		n, err = m.destroyUser(ctx, tx, user)
		return err
	})
	return n, err
}

// DestroyUserTx is [Sessions.DestroyUser] in the caller's transaction (*sql.Tx, pgx.Tx or
// store.Tx): the sessions end if and when tx commits.
func (m *Sessions) DestroyUserTx(ctx context.Context, tx any, user string) (int64, error) {
	q, err := m.s.Wrap(tx)
	if err != nil {
		return 0, err
	}
	return m.destroyUser(ctx, q, user)
}

func (m *Sessions) destroyUser(ctx context.Context, q store.Querier, user string) (int64, error) {
	n, err := m.delete(ctx, q, m.q.userValues, m.q.user, m.d.Service, user)
	if err != nil {
		return 0, fmt.Errorf("session: destroy user: %w", err)
	}
	return n, nil
}

// delete runs a delete of sessions (sessionsSQL) with their values (valuesSQL, same
// arguments) and returns how many sessions it deleted. valuesSQL is empty where the
// foreign key's cascade deletes the values (PostgreSQL; see [queries] for why).
func (m *Sessions) delete(ctx context.Context, q store.Querier, valuesSQL, sessionsSQL string, args ...any) (int64, error) {
	if valuesSQL != "" {
		if _, err := q.Exec(ctx, valuesSQL, args...); err != nil {
			return 0, err
		}
	}
	return q.Exec(ctx, sessionsSQL, args...)
}

// DestroyID ends the session with id (from [Sessions.List]), for "log out that device". It
// reports whether there was one.
func (m *Sessions) DestroyID(ctx context.Context, id string) (bool, error) {
	var n int64
	err := m.s.InTx(ctx, func(tx store.Tx) (err error) {
		n, err = m.delete(ctx, tx, m.q.idValues, m.q.id, m.d.Service, id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("session: destroy: %w", err)
	}
	return n > 0, nil
}

// pruneBatch bounds one prune transaction, so SQLite's single writer is never held long.
const pruneBatch = 1000

// Prune deletes expired sessions (and expired scs-adapter sessions) in short batches and
// returns how many it deleted. The node's leader runs it every PruneInterval; expired
// sessions are never served in between, so pruning only reclaims space.
func (m *Sessions) Prune(ctx context.Context) (int64, error) {
	var total int64
	for {
		var n int64
		err := m.s.InTx(ctx, func(tx store.Tx) error {
			a, err := m.delete(ctx, tx, m.q.pruneValues, m.q.prune, m.s.NowArg(), m.d.Service, pruneBatch)
			if err != nil {
				return err
			}
			b, err := tx.Exec(ctx, m.q.pruneSCS, m.s.NowArg(), m.d.Service, pruneBatch)
			n = a + b
			return err
		})
		if err != nil {
			return total, fmt.Errorf("session: prune: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
