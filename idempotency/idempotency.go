// Package idempotency makes retried requests safe: it implements the IETF draft "The
// Idempotency-Key HTTP Header Field" as net/http middleware on the service's own database,
// shared by every instance.
//
// A key is claimed atomically before the handler runs. A retry of a finished request gets
// the stored response (status, headers, body) without running the handler again; a
// duplicate that arrives while the first is still running gets 409; the same key with a
// different request (method, path, body) gets 422; a missing key, where required, gets 400;
// every refusal is an RFC 9457 problem+json body. Keys are kept for a retention period (24
// hours by default), after which the leader prunes them.
//
// Keys are scoped by client: [Config.Scope] names the principal a request comes from (the
// user, the API client), and two principals never share a key. A request whose principal is
// unknown is never served idempotently, so two anonymous clients can never be answered
// with each other's responses: it runs as if it had no key (with the [IgnoredHeader]
// response header), or gets 400 when keys are Required. The node's default scope is the
// user of the twice session, so the session middleware must run first, outside:
//
//	mux.Handle("POST /orders", node.Sessions().Middleware(node.Idempotency().Middleware(orders)))
//
// The other way round the session is not loaded yet when the key is scoped; the session
// middleware logs that once as a warning. Apps with their own authentication set
// Config.Scope to the principal their authentication found (see the example).
//
// If the instance running a request dies, its claim is released by its liveness: a retry
// runs the request again once the instance has missed its heartbeats for the cluster's
// DeadAfter plus a grace (10 s by default), while a slow request on a live instance is
// never run twice.
//
// The middleware cannot make a handler's effect and the stored response commit together:
// an instance killed between the two runs the effect on the retry again. Handlers that
// write to the same database use [Keys.HandlerTx] (or [Keys.DoTx]) instead, where the claim,
// the effect and the stored response are one transaction, so that crash cannot happen.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
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
	DefaultRetention        = 24 * time.Hour
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxResponseBytes = 1 << 20
	DefaultPruneInterval    = time.Minute
	DefaultDeadOwnerGrace   = 10 * time.Second
)

// ReplayedHeader is set to "true" on a response replayed from the store.
const ReplayedHeader = "Idempotent-Replayed"

// IgnoredHeader is set on the response to a request whose Idempotency-Key was not honoured,
// with the reason: "no-scope" when [Config.Scope] found no principal. The request ran
// without idempotency; a retry runs it again.
const IgnoredHeader = "Idempotency-Key-Ignored"

// Config configures [Keys].
//
// What the keys work on comes in their [block.Deps]: the store, the service (which scopes
// keys, so services sharing a database never see each other's) and this instance's id in
// the cluster's membership (a claim is taken over only once that instance stops
// heartbeating).
type Config struct {
	// Methods are the methods the key applies to; others pass through untouched. Defaults
	// to POST and PATCH.
	Methods []string
	// Required answers a request of those methods without a key with 400. Defaults to
	// false: such requests pass through.
	Required bool
	// Scope names the principal a request comes from (the authenticated user or API
	// client); keys of different principals never collide, and one can never be served
	// another's response. It returns "" when the request has no known principal: its key
	// is then ignored (the request runs without idempotency, see [IgnoredHeader]), or
	// answered 400 when Required. Return a stable identity, such as a user id or a JWT's
	// issuer and subject, not the credential itself: a refreshed token must not turn a
	// retry into a second run. Required: New fails without it (the node defaults it to
	// twice.UserScope, the twice session's user).
	Scope func(r *http.Request) string
	// Retention is how long a key and its response are kept. Defaults to
	// [DefaultRetention].
	Retention time.Duration
	// MaxBodyBytes bounds the request body read to fingerprint it; larger requests get
	// 413. Defaults to [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// MaxResponseBytes bounds a stored response body, and the body HandlerTx holds in
	// memory until its commit (beyond it, a temporary file). A larger response is sent
	// whole but not stored; a retry is told so with a problem+json body. Defaults to
	// [DefaultMaxResponseBytes].
	MaxResponseBytes int
	// StoreServerErrors stores 5xx responses like any other. Defaults to false: a 5xx
	// releases the key, so the client's retry runs the request again (HandlerTx, Do and
	// DoTx roll the effect back with it, see [ErrServerError]).
	StoreServerErrors bool
	// DeadOwnerGrace is how much longer than the cluster's DeadAfter an instance must have
	// been silent before another takes over its running claims (and the retry runs the
	// request). A takeover of a live but stalled instance would run a request twice, while a
	// late one only delays a retry, so the wait errs long. Defaults to
	// [DefaultDeadOwnerGrace].
	DeadOwnerGrace time.Duration
	// PruneInterval is how often the leader deletes expired keys. Defaults to
	// [DefaultPruneInterval].
	PruneInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Methods == nil {
		c.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.DeadOwnerGrace == 0 {
		c.DeadOwnerGrace = DefaultDeadOwnerGrace
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Scope == nil {
		errs = append(errs, errors.New("a Scope is required: the function naming the client a request comes from"))
	}
	if c.Retention < time.Second {
		errs = append(errs, fmt.Errorf("a Retention of %v is below a second", c.Retention))
	}
	if c.MaxBodyBytes < 0 || c.MaxResponseBytes < 0 {
		errs = append(errs, errors.New("MaxBodyBytes and MaxResponseBytes must not be negative"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("idempotency: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// AuthorizationScope is a [Config.Scope] for APIs whose clients keep one long-lived
// credential (a static API key or token): a hash of the request's Authorization header, or
// "" without one. It scopes by the credential, not by who holds it, so it is never a
// default: when a client's token changes (an OAuth refresh, a rotated key) its retries get
// a new scope and run again. Where tokens change, resolve them to their principal instead.
func AuthorizationScope(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if a == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(a))
	return "auth:" + hex.EncodeToString(sum[:16])
}

// Keys are the idempotency keys of one service. Get them from the node
// (twice.Node.Idempotency) or make them with [New] on a migrated store.
type Keys struct {
	d   block.Deps
	s   *store.Store
	cfg Config
	q   queries
	log *slog.Logger

	warnedScope atomic.Bool // a request without a principal was logged
	out         *outbox     // outcomes the database did not take yet

	replays, reused, inUse atomic.Uint64 // see Stats
}

// Stats counts the requests [Keys.Middleware] and [Keys.HandlerTx] answered from a key
// already claimed.
type Stats struct {
	// Replays counts responses replayed from a finished request (and those whose response
	// was not stored, answered with its status only).
	Replays uint64 `json:"replays"`
	// Reused counts keys used again for a different request (HTTP 422).
	Reused uint64 `json:"reused"`
	// InUse counts duplicates of a request still running (HTTP 409).
	InUse uint64 `json:"in_use"`
}

// Stats returns the counts of requests answered from a claimed key on this instance since
// it started. Package metrics exports them.
func (k *Keys) Stats() Stats {
	return Stats{Replays: k.replays.Load(), Reused: k.reused.Load(), InUse: k.inUse.Load()}
}

// New returns the keys of d's service in d's store, whose schema must include
// [Component] and the cluster's membership table. It starts nothing and runs no
// statement. Call [Keys.Close] on shutdown, before closing the store, so that outcomes the
// database refused meanwhile are still written (the node does both).
func New(d block.Deps, cfg Config) (*Keys, error) {
	d = d.WithDefaults()
	if err := d.Validate("idempotency", true); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Keys{d: d, s: d.Store, cfg: cfg, q: queriesFor(d.Store), log: d.Logger, out: newOutbox()}, nil
}

// Start has nothing to start: keys are claimed in the requests that carry them, and the
// writer of refused outcomes runs only while it has some. It is there for the node.
func (k *Keys) Start(context.Context) error { return nil }

// Lead deletes expired keys at once and then every PruneInterval, while this instance
// leads, until ctx ends.
func (k *Keys) Lead(ctx context.Context) {
	prune := func(ctx context.Context) {
		if n, err := k.Prune(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("idempotency: pruning expired keys failed", "err", err)
		} else if n > 0 {
			k.log.Debug("idempotency: pruned expired keys", "count", n)
		}
	}
	prune(ctx)
	loop.Every(ctx, k.cfg.PruneInterval, prune)
}

// Config returns the configuration with defaults filled in.
func (k *Keys) Config() Config { return k.cfg }

// Fingerprint identifies a request for the key's reuse check: its method, path with
// query, and body.
func Fingerprint(r *http.Request, body []byte) []byte {
	h := sha256.New()
	bodySum := sha256.Sum256(body)
	fmt.Fprintf(h, "%s\n%s\n%x", r.Method, r.URL.RequestURI(), bodySum)
	return h.Sum(nil)
}

// prepare reads what the key needs from r. ok is false when r has no key and none is
// required, or no principal to scope it to: it passes through, as the returned request. On
// a bad request it writes the problem and returns done.
func (k *Keys) prepare(w http.ResponseWriter, r *http.Request) (p Params, _ *http.Request, ok, done bool) {
	if !slices.Contains(k.cfg.Methods, r.Method) {
		return p, r, false, false
	}
	key, err := ParseKey(r.Header.Values(Header))
	switch {
	case errors.Is(err, ErrKeyMissing) && !k.cfg.Required:
		return p, r, false, false
	case errors.Is(err, ErrKeyMissing):
		problem(w, http.StatusBadRequest, "idempotency-key-missing", "this request needs an Idempotency-Key header")
		return p, r, false, true
	case err != nil:
		problem(w, http.StatusBadRequest, "idempotency-key-invalid", err.Error())
		return p, r, false, true
	}
	scope := k.cfg.Scope(r)
	if scope == "" {
		return p, k.unscoped(w, r), false, k.cfg.Required
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, k.cfg.MaxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			problem(w, http.StatusRequestEntityTooLarge, "request-too-large",
				fmt.Sprintf("the request body is larger than %d bytes", k.cfg.MaxBodyBytes))
		} else {
			problem(w, http.StatusBadRequest, "request-unreadable", "the request body could not be read")
		}
		return p, r, false, true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return Params{Scope: scope, Key: key, Fingerprint: Fingerprint(r, body)}, r, true, false
}

// unscoped handles a keyed request without a principal, which must not share a key space
// with every other such request: with Required it answers 400; otherwise the key is ignored
// and the request, returned marked for a session middleware that runs too late, passes
// through.
func (k *Keys) unscoped(w http.ResponseWriter, r *http.Request) *http.Request {
	if k.cfg.Required {
		problem(w, http.StatusBadRequest, "idempotency-scope-missing",
			"the Idempotency-Key needs an authenticated client to belong to; this request has none")
		return r
	}
	level := slog.LevelDebug
	if !k.warnedScope.Swap(true) {
		level = slog.LevelWarn // once: then it is the app's normal traffic, or its misconfiguration
	}
	k.log.Log(r.Context(), level, "idempotency: a request with an Idempotency-Key has no principal (Config.Scope returned \"\"), so it runs without idempotency; "+
		"with the node's default scope, the session middleware must run before the idempotency middleware and the user be logged in",
		"method", r.Method, "path", r.URL.Path)
	w.Header().Set(IgnoredHeader, "no-scope")
	return httpx.MarkUnscoped(r)
}

// Middleware applies the Idempotency-Key to requests of Config.Methods. It claims the key
// before next runs, stores next's response before the client sees it (up to
// MaxResponseBytes; a larger or streamed response passes through unstored), and answers
// retries from the store.
func (k *Keys) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, r, ok, done := k.prepare(w, r)
		if done {
			return
		}
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		// Retries of finished requests, and duplicates of one running on a live instance,
		// are answered from a read without queueing for a write (SQLite has one writer);
		// only a new key or a dead owner's claim needs the claim statement.
		if rec, found, err := k.get(ctx, k.s.Reader(), p); err == nil && found && (rec.mismatch || rec.state != stateRunning || rec.alive) {
			k.answer(w, rec)
			return
		}
		if k.refuseWhenBacklogged(w) {
			return
		}
		claimed, rec, err := k.claimOrGet(ctx, k.s, p)
		if err != nil {
			k.unavailable(w, err)
			return
		}
		if !claimed {
			k.answer(w, rec)
			return
		}
		buf := httpx.NewBuffer(w, k.cfg.MaxResponseBytes)
		buf.OnStream = func(h http.Header) { h.Set(storedHeader, "false") }
		finished := false
		defer func() {
			if !finished {
				// next panicked: the request did not finish, so a retry may run it.
				k.settle(ctx, outcome{p: p})
			}
		}()
		next.ServeHTTP(buf, r)
		finished = true
		res := &Response{Status: buf.Status(), partial: buf.Streamed()}
		if !res.partial {
			res.Header, res.Body = buf.Captured()
		}
		if state, keep := k.verdict(res); keep {
			k.settle(ctx, outcome{p: p, res: res, state: state})
		} else {
			k.settle(ctx, outcome{p: p}) // released: the retry runs the request again
		}
		buf.Send()
	})
}

func problem(w http.ResponseWriter, status int, typ, detail string) {
	httpx.WriteProblem(w, httpx.Problem{Type: typ, Status: status, Detail: detail})
}

func (k *Keys) unavailable(w http.ResponseWriter, err error) {
	k.log.Error("idempotency: store unavailable", "err", err)
	problem(w, http.StatusServiceUnavailable, "idempotency-store-unavailable", "the idempotency key could not be checked; retry with the same key")
}

// answer responds to a request whose key was already claimed.
func (k *Keys) answer(w http.ResponseWriter, rec *record) {
	switch {
	case rec.mismatch:
		k.reused.Add(1)
	case rec.state == stateRunning:
		k.inUse.Add(1)
	default:
		k.replays.Add(1)
	}
	switch {
	case rec.mismatch:
		problem(w, http.StatusUnprocessableEntity, "idempotency-key-reused",
			"this Idempotency-Key was used for a different request (method, path or body); use a new key")
	case rec.state == stateRunning:
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusConflict, "idempotency-key-in-use",
			"a request with this Idempotency-Key is still being processed; retry later")
	case rec.state == stateNotStored:
		w.Header().Set(ReplayedHeader, "true")
		problem(w, rec.res.Status, "idempotency-response-not-stored", fmt.Sprintf(
			"the request was processed once with status %d, but its response was not kept (too large, or streamed); fetch the resource instead", rec.res.Status))
	default:
		h := w.Header()
		for name, v := range rec.res.Header {
			h[name] = v
		}
		h.Set(ReplayedHeader, "true")
		w.WriteHeader(rec.res.Status)
		_, _ = w.Write(rec.res.Body)
	}
}

// Prune deletes expired keys in short batches and returns how many. The node's leader runs
// it every PruneInterval; expired keys are never honoured in between.
func (k *Keys) Prune(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := k.s.Exec(ctx, k.q.prune, k.s.NowArg(), k.d.Service, pruneBatch)
		if err != nil {
			return total, fmt.Errorf("idempotency: prune: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

const pruneBatch = 1000

// storedHeader is set to "false" on a response sent whole but stored as its status only.
const storedHeader = "Idempotency-Stored"

// verdict decides what a finished request leaves under its key, for the middleware,
// HandlerTx and DoTx alike: the whole response (stateDone); its status only
// (stateNotStored), when the body is larger than MaxResponseBytes or was not held whole;
// or nothing (keep false) for a 5xx without StoreServerErrors, so that the client's retry
// runs the request again.
func (k *Keys) verdict(res *Response) (state int, keep bool) {
	switch {
	case res.Status >= 500 && !k.cfg.StoreServerErrors:
		return 0, false
	case res.partial || len(res.Body) > k.cfg.MaxResponseBytes:
		return stateNotStored, true
	}
	return stateDone, true
}

// storedHeaders leaves out what must not be replayed: cookies (a stale session token),
// the date, and the framing of the original response.
func storedHeaders(h http.Header) http.Header {
	out := http.Header{}
	for name, v := range h {
		switch strings.ToLower(name) {
		case "set-cookie", "date", "content-length", "transfer-encoding", "connection", "idempotency-stored":
			continue
		}
		out[name] = v
	}
	return out
}
