// Package forward is HTTP middleware that sends a request to the instance owning the key it
// is about, over the address each instance advertises, and streams the owner's response
// back. WebSocket upgrades are forwarded too.
//
// # Security
//
// Instances trust a forwarded request only when it is signed with the cluster secret. The
// sender signs, with HMAC-SHA256 under a key derived from the secret for instance-to-instance
// HTTP and the service (so a bus signature or another service's never verifies here), the
// method, the request target (path and query as sent), the SHA-256 of the body, the send
// time in milliseconds, and the sending and receiving instance ids, and puts the tag in
// [HopHeader]. The receiver refuses with 403 a request whose header is malformed, whose
// tag does not match (forged, altered, another secret or service), or whose send time lies
// more than [Config.Validity] (10 s) from its own clock either way; and with 503 one
// signed for another instance (an address now used by a new instance). The clocks of
// the instances must agree within Validity, less the time a request takes to arrive (NTP
// keeps them within milliseconds). Headers are not signed, and a request captured on the
// network between instances can be replayed to the same instance within that window:
// where that network is not trusted, give the forwarder a Transport that speaks TLS to the
// instances.
//
// A header from outside the cluster is refused, never trusted, never stripped and
// forwarded: only an instance's own forward carries one.
//
// # Loops
//
// A signed request is never forwarded again. If it reaches an instance that is not, or no
// longer, the key's owner (ownership moved while the request was on its way), that instance
// answers 503 with Retry-After instead of serving it: serving would let two instances act
// on one key at once, which is what owning a key rules out, while the client's retry, a
// second later, reaches the new owner.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/clusterkey"
)

// Defaults of [Config].
const (
	// DefaultMaxBodyBytes bounds a forwarded request's body: it is held in memory to be
	// hashed.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultValidity is how far a signed request's send time may lie from the receiver's
	// clock.
	DefaultValidity = 10 * time.Second
	// DefaultRetryAfter is the wait a 503 asks for.
	DefaultRetryAfter = time.Second
	// DefaultDialTimeout bounds the default Transport's connection to an owner: an owner
	// whose machine vanished answers nothing, and the client gets 503 after this long.
	DefaultDialTimeout = 2 * time.Second
)

// ErrNoOwner is what [Config.Locate] returns when no live instance owns a key; the client
// gets 503 with Retry-After.
var ErrNoOwner = errors.New("forward: no live instance owns the key")

// Target is the instance owning a key, as [Config.Locate] finds it.
type Target struct {
	// Instance is the owner's instance id.
	Instance string
	// Addr is the address the owner advertises: "host:port", or a URL with scheme http or
	// https ("https://10.0.0.7:8443"). Required unless Self.
	Addr string
	// Self says the owner is this instance (as does an Instance equal to
	// [Config.Instance]): the request is served here.
	Self bool
}

// Config configures a [Forwarder].
type Config struct {
	// Secret is the cluster secret every instance of the service shares, at least 32
	// bytes (twice.Config.ClusterSecret). Required.
	Secret []byte
	// Service is the service the instances belong to; a request signed for another never
	// verifies. Required.
	Service string
	// Instance is this instance's id, as [Config.Locate] names instances. Required.
	Instance string
	// Key says which key a request is about; false serves it here, unforwarded. It runs
	// before the request's body is read. Required.
	Key func(r *http.Request) (key string, ok bool)
	// Locate finds the owner of key. It returns [ErrNoOwner] (or any error) when there is
	// none: the client gets 503 with Retry-After. It runs on every request with a key, so
	// it should answer from memory. Required.
	Locate func(key string) (Target, error)
	// Transport sends forwarded requests. Defaults to a transport of its own with
	// [DefaultDialTimeout] that ignores HTTP_PROXY (instances talk directly).
	Transport http.RoundTripper
	// MaxBodyBytes bounds the body of a request forwarded or received from another
	// instance: it is held in memory to be hashed. A larger one gets 413. Defaults to
	// [DefaultMaxBodyBytes] (1 MiB).
	MaxBodyBytes int64
	// Validity is how far a signed request's send time may lie from the receiver's clock,
	// either way. Defaults to [DefaultValidity] (10 s).
	Validity time.Duration
	// RetryAfter is the wait a 503 asks the client for, in whole seconds (rounded up).
	// Defaults to [DefaultRetryAfter] (1 s).
	RetryAfter time.Duration
	// Logger receives a warning, at most once a minute each, when requests are refused or
	// owners cannot be found or reached. Defaults to slog.Default().
	Logger *slog.Logger
	// Now replaces the clock. For tests only; defaults to time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Transport == nil {
		c.Transport = newTransport()
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Validity == 0 {
		c.Validity = DefaultValidity
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Secret) == 0 {
		errs = append(errs, errors.New("a Secret is required: the cluster secret (twice.Config.ClusterSecret) authenticates requests between instances"))
	} else if err := clusterkey.Check(c.Secret); err != nil {
		errs = append(errs, err)
	}
	if c.Service == "" {
		errs = append(errs, errors.New("a Service is required"))
	}
	if c.Instance == "" {
		errs = append(errs, errors.New("an Instance is required: this instance's id"))
	} else if len(c.Instance) > maxInstanceLen {
		errs = append(errs, fmt.Errorf("the Instance id is %d bytes; at most %d are allowed", len(c.Instance), maxInstanceLen))
	}
	if c.Key == nil {
		errs = append(errs, errors.New("a Key function is required: it says which key a request is about"))
	}
	if c.Locate == nil {
		errs = append(errs, errors.New("a Locate function is required: it finds the instance owning a key"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("a negative MaxBodyBytes %d", c.MaxBodyBytes))
	}
	if c.Validity < time.Second {
		errs = append(errs, fmt.Errorf("a Validity of %v is below a second", c.Validity))
	}
	if c.RetryAfter < 0 {
		errs = append(errs, fmt.Errorf("a negative RetryAfter %v", c.RetryAfter))
	}
	if len(errs) > 0 {
		return fmt.Errorf("forward: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = (&net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConnsPerHost = 64
	return t
}

// Forwarder forwards requests to the owners of their keys. Wrap handlers with its
// [Forwarder.Middleware]. It is safe for concurrent use.
type Forwarder struct {
	cfg   Config
	key   *clusterkey.Key
	proxy *httputil.ReverseProxy
	log   *slog.Logger

	forwarded, received, refused, notOwner, unavailable atomic.Uint64
	refusedWarn, unavailableWarn                        warnLimit
}

// warnLimit lets a warning out at most once a minute: a flood of refused requests, or of
// requests to an owner that just died, logs a line a minute with the counts, not a line a
// request.
type warnLimit struct {
	last atomic.Int64 // Unix seconds of the last warning
}

func (l *warnLimit) allow(now time.Time) bool {
	last, s := l.last.Load(), now.Unix()
	return s-last >= 60 && l.last.CompareAndSwap(last, s)
}

// Stats counts what a [Forwarder] did.
type Stats struct {
	// Forwarded counts the requests sent to another instance.
	Forwarded uint64 `json:"forwarded"`
	// Received counts the signed requests from other instances that were served here.
	Received uint64 `json:"received"`
	// Refused counts the requests refused for their HopHeader: malformed, forged, stale or
	// signed for another instance.
	Refused uint64 `json:"refused"`
	// NotOwner counts the signed requests that reached this instance after it stopped
	// owning their key, answered 503.
	NotOwner uint64 `json:"not_owner"`
	// Unavailable counts the requests answered 503 or 502 because no owner was alive or
	// reachable.
	Unavailable uint64 `json:"unavailable"`
}

// New returns a forwarder for cfg.
func New(cfg Config) (*Forwarder, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	key, err := clusterkey.Derive(cfg.Secret, clusterkey.HTTP, cfg.Service)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{cfg: cfg, key: key, log: cfg.Logger.With("instance", cfg.Instance, "service", cfg.Service)}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:      f.rewrite,
		Transport:    cfg.Transport,
		ErrorHandler: f.proxyError,
		ErrorLog:     slog.NewLogLogger(f.log.Handler(), slog.LevelWarn),
	}
	return f, nil
}

// Stats returns the counts of what the forwarder did.
func (f *Forwarder) Stats() Stats {
	return Stats{Forwarded: f.forwarded.Load(), Received: f.received.Load(), Refused: f.refused.Load(),
		NotOwner: f.notOwner.Load(), Unavailable: f.unavailable.Load()}
}

// Close closes the idle connections of the forwarder's Transport. Requests in flight go
// on.
func (f *Forwarder) Close() {
	if t, ok := f.cfg.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

type senderKey struct{}

// ForwardedBy returns the instance that forwarded the request of ctx to this one, and
// whether it was forwarded. Its signature was checked.
func ForwardedBy(ctx context.Context) (instance string, ok bool) {
	instance, ok = ctx.Value(senderKey{}).(string)
	return instance, ok
}
