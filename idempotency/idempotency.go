// Package idempotency makes retried requests safe: it implements the IETF draft "The
// Idempotency-Key HTTP Header Field" as net/http middleware on the service's own database,
// shared by every instance.
//
// A key is claimed atomically before the handler runs. A retry of a finished request gets
// the stored response (status, headers, body) without running the handler again; a
// duplicate that arrives while the first is still running gets 409; the same key with a
// different request (method, path, body) gets 422; a missing key, where required, gets 400;
// every refusal is an RFC 9457 problem+json body. Keys are scoped per client and kept for
// a retention period (24 hours by default), after which the leader prunes them.
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
	"time"

	"github.com/twicehq/twice/internal/httpx"
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

// Config configures [Keys].
type Config struct {
	// Service scopes keys: services sharing a database never see each other's. Required
	// (the node sets it).
	Service string
	// Instance is the id of this instance in the cluster's membership: a claim is taken
	// over only once that instance stops heartbeating. Required (the node sets it).
	Instance string
	// Methods are the methods the key applies to; others pass through untouched. Defaults
	// to POST and PATCH.
	Methods []string
	// Required answers a request of those methods without a key with 400. Defaults to
	// false: such requests pass through.
	Required bool
	// Scope names the client a request comes from; keys of different clients never
	// collide, and one client can never be served another's response. Set it to the
	// authenticated user or API client. Defaults to [AuthorizationScope], a hash of the
	// Authorization header (one scope for all requests without it); the node's default is
	// twice.UserScope, which prefers the session's user.
	Scope func(r *http.Request) string
	// Retention is how long a key and its response are kept. Defaults to
	// [DefaultRetention].
	Retention time.Duration
	// MaxBodyBytes bounds the request body read to fingerprint it; larger requests get
	// 413. Defaults to [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// MaxResponseBytes bounds a stored response body. A larger response is sent whole but
	// not stored; a retry is told so with a problem+json body. Defaults to
	// [DefaultMaxResponseBytes].
	MaxResponseBytes int
	// StoreServerErrors stores 5xx responses like any other. Defaults to false: a 5xx
	// releases the key, so the client's retry runs the request again.
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
	// Logger defaults to slog.Default(). It should carry the instance id; the node's does.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Methods == nil {
		c.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	if c.Scope == nil {
		c.Scope = AuthorizationScope
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Service == "" || c.Instance == "" {
		errs = append(errs, errors.New("Service and Instance are required"))
	}
	if c.Retention < time.Second {
		errs = append(errs, fmt.Errorf("Retention %v is below a second", c.Retention))
	}
	if c.MaxBodyBytes < 0 || c.MaxResponseBytes < 0 {
		errs = append(errs, errors.New("MaxBodyBytes and MaxResponseBytes must not be negative"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("idempotency: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// AuthorizationScope is the default [Config.Scope]: a hash of the request's Authorization
// header, so two API clients never share a key space.
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
	s   *store.Store
	cfg Config
	q   queries
	log *slog.Logger
}

// New returns the keys of cfg.Service in s, whose schema must include [Component] and the
// cluster's membership table.
func New(s *store.Store, cfg Config) (*Keys, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Keys{s: s, cfg: cfg, q: queriesFor(s), log: cfg.Logger}, nil
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
// required: it passes through. On a bad request it writes the problem and returns done.
func (k *Keys) prepare(w http.ResponseWriter, r *http.Request) (p Params, ok, done bool) {
	if !slices.Contains(k.cfg.Methods, r.Method) {
		return p, false, false
	}
	key, err := ParseKey(r.Header.Values(Header))
	switch {
	case errors.Is(err, ErrKeyMissing) && !k.cfg.Required:
		return p, false, false
	case errors.Is(err, ErrKeyMissing):
		problem(w, http.StatusBadRequest, "idempotency-key-missing", "this request needs an Idempotency-Key header")
		return p, false, true
	case err != nil:
		problem(w, http.StatusBadRequest, "idempotency-key-invalid", err.Error())
		return p, false, true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, k.cfg.MaxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			problem(w, http.StatusRequestEntityTooLarge, "request-too-large",
				fmt.Sprintf("the request body is larger than %d bytes", k.cfg.MaxBodyBytes))
		} else {
			problem(w, http.StatusBadRequest, "request-unreadable", "the request body could not be read")
		}
		return p, false, true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return Params{Scope: k.cfg.Scope(r), Key: key, Fingerprint: Fingerprint(r, body)}, true, false
}

// Middleware applies the Idempotency-Key to requests of Config.Methods. It claims the key
// before next runs, stores next's response before the client sees it (up to
// MaxResponseBytes; a larger or streamed response passes through unstored), and answers
// retries from the store.
func (k *Keys) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok, done := k.prepare(w, r)
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
		buf.OnStream = func(h http.Header) { h.Set("Idempotency-Stored", "false") }
		finished := false
		defer func() {
			if !finished {
				// next panicked: the request did not finish, so a retry may run it.
				k.retry(ctx, "release", func(ctx context.Context) error { return k.release(ctx, p) })
			}
		}()
		next.ServeHTTP(buf, r)
		finished = true
		status := buf.Status()
		switch {
		case status >= 500 && !k.cfg.StoreServerErrors:
			k.retry(ctx, "release", func(ctx context.Context) error { return k.release(ctx, p) })
		case buf.Streamed():
			k.retry(ctx, "complete", func(ctx context.Context) error {
				return k.complete(ctx, k.s, p, &Response{Status: status}, stateNotStored)
			})
		default:
			header, body := buf.Captured()
			k.retry(ctx, "complete", func(ctx context.Context) error {
				return k.complete(ctx, k.s, p, &Response{Status: status, Header: header, Body: body}, stateDone)
			})
		}
		buf.Send()
	})
}

// retry runs a bookkeeping write after the handler ran, a few times, even if the client
// went away. If it still fails the key stays claimed by this live instance, answering 409,
// until the instance stops (then it is taken over) or the retention passes; that is
// logged as an error.
func (k *Keys) retry(ctx context.Context, what string, fn func(context.Context) error) {
	ctx = context.WithoutCancel(ctx)
	var err error
	for i := range 4 {
		if i > 0 {
			time.Sleep(time.Duration(25<<i) * time.Millisecond)
		}
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = fn(c)
		cancel()
		if err == nil {
			return
		}
	}
	k.log.Error("idempotency: could not record the outcome of a request; its key stays claimed", "what", what, "err", err)
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
		problem(w, http.StatusUnprocessableEntity, "idempotency-key-reused",
			"this Idempotency-Key was used for a different request (method, path or body); use a new key")
	case rec.state == stateRunning:
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusConflict, "idempotency-key-in-use",
			"a request with this Idempotency-Key is still being processed; retry later")
	case rec.state == stateNotStored:
		w.Header().Set(ReplayedHeader, "true")
		problem(w, rec.res.Status, "idempotency-response-not-stored", fmt.Sprintf(
			"the request was processed once with status %d, but its response was too large to keep; fetch the resource instead", rec.res.Status))
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
		n, err := k.s.Exec(ctx, k.q.prune, k.s.NowArg(), k.cfg.Service, pruneBatch)
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

// PruneInterval is how often the leader should call [Keys.Prune].
func (k *Keys) PruneInterval() time.Duration { return k.cfg.PruneInterval }

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
