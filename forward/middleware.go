package forward

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/twicehq/twice/internal/httpx"
)

// Middleware forwards each request whose key another instance owns to that instance and
// streams its response back; a request without a key, or whose key this instance owns,
// goes to next. A request another instance forwarded here is checked (see the package's
// Security section) and served here, or answered 503 if this instance no longer owns its
// key; it is never forwarded again.
//
// The forwarded request keeps its method, its original target (r.RequestURI, so a prefix
// an http.StripPrefix removed here is sent too), its Host and its headers; the client's
// address is appended to X-Forwarded-For, the scheme it used to X-Forwarded-Proto (and an
// element to Forwarded when the request has one), so the owner's application sees the
// forwarding instance as one more proxy: count the instances among its trusted proxies
// (session.Config.TrustedProxies) where it reads them. The body is read whole first (up to
// [Config.MaxBodyBytes]) to be signed. The response, WebSocket and other upgrades
// included, streams back as the owner writes it; a client that goes away cancels the
// owner's request.
//
// Put it outermost, before middleware that does work for the request (sessions,
// idempotency): the owner runs that work. When the key is something a middleware gives
// (the session's user), put it inside that one middleware instead, and let the owner run
// it again: the receiving instance only reads the session to find the key, the owner reads
// it again and does the request's work (the demo shop's cart does this). A middleware that
// writes for the request (idempotency) stays inside, at the owner.
func (f *Forwarder) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if vals := r.Header.Values(HopHeader); len(vals) > 0 {
			f.receive(w, r, next, vals)
			return
		}
		key, ok := f.cfg.Key(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		t, err := f.cfg.Locate(key)
		if err != nil {
			f.unavailable.Add(1)
			if !errors.Is(err, ErrNoOwner) && f.unavailableWarn.allow(f.cfg.Now()) {
				f.log.Warn("forward: cannot locate the owner of a key", "key", key, "err", err, "unavailable", f.unavailable.Load())
			}
			f.unavailableProblem(w, "forward-no-owner", "no live instance owns this request's key")
			return
		}
		if f.self(t) {
			next.ServeHTTP(w, r)
			return
		}
		f.forward(w, r, t)
	})
}

func (f *Forwarder) self(t Target) bool { return t.Self || t.Instance == f.cfg.Instance }

// outbound is what rewrite needs to send a request to its owner.
type outbound struct {
	base   *url.URL // the owner's scheme and host
	target *url.URL // the original request target: path and query
	to     string   // the owner's instance id
	sum    [sha256.Size]byte
}

type outboundKey struct{}

func (f *Forwarder) forward(w http.ResponseWriter, r *http.Request, t Target) {
	base, err := baseURL(t.Addr)
	if err != nil || t.Instance == "" {
		f.unavailable.Add(1)
		if f.unavailableWarn.allow(f.cfg.Now()) {
			f.log.Error("forward: the owner of a key cannot be reached: set its advertised address (twice.Config.AdvertiseAddr)",
				"owner", t.Instance, "addr", t.Addr, "err", err)
		}
		httpx.WriteProblem(w, httpx.Problem{Type: "forward-owner-address", Status: http.StatusInternalServerError,
			Detail: "the instance owning this request's key advertises no usable address"})
		return
	}
	target, err := requestTarget(r)
	if err != nil {
		httpx.WriteProblem(w, httpx.Problem{Type: "forward-target-malformed", Status: http.StatusBadRequest, Detail: err.Error()})
		return
	}
	body, ok := f.readBody(w, r)
	if !ok {
		return
	}
	o := &outbound{base: base, target: target, to: t.Instance, sum: sha256.Sum256(body)}
	out := r.WithContext(context.WithValue(r.Context(), outboundKey{}, o))
	setBody(out, body)
	f.forwarded.Add(1)
	f.proxy.ServeHTTP(w, out)
}

// rewrite makes the request to the owner (httputil.ReverseProxy has removed hop-by-hop
// and X-Forwarded headers from pr.Out; an upgrade's Connection and Upgrade stay).
func (f *Forwarder) rewrite(pr *httputil.ProxyRequest) {
	o := pr.In.Context().Value(outboundKey{}).(*outbound)
	u := pr.Out.URL
	u.Scheme, u.Host, u.User = o.base.Scheme, o.base.Host, nil
	u.Opaque, u.Path, u.RawPath, u.RawQuery, u.ForceQuery = "", o.target.Path, o.target.RawPath, o.target.RawQuery, o.target.ForceQuery
	pr.Out.Host = pr.In.Host
	appendForwarded(pr)
	pr.Out.Header.Del("Expect") // the body is already here
	h := sign(f.key, f.cfg.Instance, o.to, f.cfg.Now(), signed{method: pr.Out.Method, uri: u.RequestURI(), body: o.sum})
	pr.Out.Header.Set(HopHeader, h.String())
}

// appendForwarded appends this hop to the X-Forwarded headers the client's request came
// with (and to Forwarded, if it came with one).
func appendForwarded(pr *httputil.ProxyRequest) {
	in, out := pr.In.Header, pr.Out.Header
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	client, _, err := net.SplitHostPort(pr.In.RemoteAddr)
	if err != nil {
		client = ""
	}
	if client != "" {
		out.Set("X-Forwarded-For", joinList(in.Values("X-Forwarded-For"), client))
	} else if v := in.Values("X-Forwarded-For"); len(v) > 0 {
		out["X-Forwarded-For"] = v
	}
	out.Set("X-Forwarded-Proto", joinList(in.Values("X-Forwarded-Proto"), proto))
	if v := in.Values("X-Forwarded-Host"); len(v) > 0 {
		out["X-Forwarded-Host"] = v
	}
	if v := in.Values("Forwarded"); len(v) > 0 {
		elem := "proto=" + proto
		if client != "" {
			node := client
			if strings.Contains(client, ":") {
				node = `"[` + client + `]"`
			}
			elem = "for=" + node + ";" + elem
		}
		out.Set("Forwarded", joinList(v, elem))
	}
}

func joinList(prior []string, v string) string {
	if len(prior) == 0 {
		return v
	}
	return strings.Join(prior, ", ") + ", " + v
}

func (f *Forwarder) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	o := r.Context().Value(outboundKey{}).(*outbound)
	if r.Context().Err() != nil {
		f.log.Debug("forward: the client went away", "owner", o.to, "err", err)
		return // nobody is left to answer
	}
	f.unavailable.Add(1)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// The request never left: the owner may just have died, and its keys will move.
		if f.unavailableWarn.allow(f.cfg.Now()) {
			f.log.Warn("forward: cannot connect to the owner of a key", "owner", o.to, "addr", o.base.Host, "err", err,
				"unavailable", f.unavailable.Load())
		}
		f.unavailableProblem(w, "forward-owner-unreachable", "the instance owning this request's key cannot be reached")
		return
	}
	// The owner may have run the request: a retry is the client's decision.
	if f.unavailableWarn.allow(f.cfg.Now()) {
		f.log.Warn("forward: the owner of a key failed to answer", "owner", o.to, "addr", o.base.Host, "err", err,
			"unavailable", f.unavailable.Load())
	}
	httpx.WriteProblem(w, httpx.Problem{Type: "forward-owner-failed", Status: http.StatusBadGateway,
		Detail: "the instance owning this request's key did not answer"})
}

// receive serves a request another instance says it forwarded.
func (f *Forwarder) receive(w http.ResponseWriter, r *http.Request, next http.Handler, vals []string) {
	if len(vals) != 1 {
		f.refuse(w, r, "forward-malformed", fmt.Sprintf("%d %s headers", len(vals), HopHeader))
		return
	}
	h, err := parseHop(vals[0])
	if err != nil {
		f.refuse(w, r, "forward-malformed", err.Error())
		return
	}
	body, ok := f.readBody(w, r)
	if !ok {
		return
	}
	if !h.verify(f.key, signed{method: r.Method, uri: requestURI(r), body: sha256.Sum256(body)}) {
		f.refuse(w, r, "forward-forged", "the "+HopHeader+" signature does not match the request")
		return
	}
	if age := f.cfg.Now().UnixMilli() - h.at; age > f.cfg.Validity.Milliseconds() || age < -f.cfg.Validity.Milliseconds() {
		f.refuse(w, r, "forward-stale", fmt.Sprintf("signed %v from this instance's clock; at most %v is accepted",
			time.Duration(age)*time.Millisecond, f.cfg.Validity))
		return
	}
	if h.to != f.cfg.Instance {
		// Genuine, but for an instance that used this address before: the sender's view
		// of the cluster is behind, and the owner is elsewhere.
		f.refused.Add(1)
		f.unavailableProblem(w, "forward-misdirected", "this request was forwarded to another instance")
		return
	}
	r.Header.Del(HopHeader)
	in := r.WithContext(context.WithValue(r.Context(), senderKey{}, h.from))
	setBody(in, body)
	if key, ok := f.cfg.Key(in); ok {
		if t, err := f.cfg.Locate(key); err != nil || !f.self(t) {
			// Ownership moved while the request travelled. Serving it would put two
			// instances on one key; forwarding it again could loop.
			f.notOwner.Add(1)
			f.unavailableProblem(w, "forward-not-owner", "ownership of this request's key is moving")
			return
		}
	}
	f.received.Add(1)
	next.ServeHTTP(w, in)
}

// readBody reads r's body whole, up to MaxBodyBytes; beyond it, or when reading fails, it
// answers and reports false.
func (f *Forwarder) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	limit := f.cfg.MaxBodyBytes
	tooLarge := func() ([]byte, bool) {
		httpx.WriteProblem(w, httpx.Problem{Type: "forward-body-too-large", Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("a request forwarded between instances carries at most %d bytes", limit)})
		return nil, false
	}
	if r.ContentLength > limit {
		return tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		if r.Context().Err() == nil {
			httpx.WriteProblem(w, httpx.Problem{Type: "forward-body-unreadable", Status: http.StatusBadRequest, Detail: "the request's body could not be read"})
		}
		return nil, false
	}
	if int64(len(body)) > limit {
		return tooLarge()
	}
	return body, true
}

func setBody(r *http.Request, body []byte) {
	r.ContentLength = int64(len(body))
	if len(body) == 0 {
		r.Body, r.GetBody = http.NoBody, nil
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

func (f *Forwarder) refuse(w http.ResponseWriter, r *http.Request, typ, detail string) {
	f.refused.Add(1)
	if f.refusedWarn.allow(f.cfg.Now()) {
		f.log.Warn("forward: refused a request not signed by an instance of this service", "why", typ, "detail", detail,
			"remote", r.RemoteAddr, "refused", f.refused.Load())
	}
	httpx.WriteProblem(w, httpx.Problem{Type: typ, Status: http.StatusForbidden, Detail: detail})
}

func (f *Forwarder) unavailableProblem(w http.ResponseWriter, typ, detail string) {
	secs := int64((f.cfg.RetryAfter + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	httpx.WriteProblem(w, httpx.Problem{Type: typ, Status: http.StatusServiceUnavailable, Detail: detail})
}

// requestURI is the target r arrived with.
func requestURI(r *http.Request) string {
	if r.RequestURI != "" {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// requestTarget parses the target r arrived with: a handler's r.URL may have lost a prefix.
func requestTarget(r *http.Request) (*url.URL, error) {
	if r.RequestURI == "" || r.RequestURI == "*" {
		return r.URL, nil
	}
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return nil, fmt.Errorf("forward: the request target %q does not parse: %w", r.RequestURI, err)
	}
	return u, nil
}

// baseURL parses an advertised address: "host:port" or an http(s) URL without a path.
func baseURL(addr string) (*url.URL, error) {
	if addr == "" {
		return nil, errors.New("no address")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return nil, fmt.Errorf("%q is not host:port or an http(s) URL without a path", addr)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}
