package run

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"
)

// StickyCookie is the cookie that names the instance a client sticks to, with --sticky.
const StickyCookie = "twice-instance"

// errNoInstance is the proxy's answer when no instance may take a request.
var errNoInstance = errors.New("no instance is ready")

// proxy is the handler in front of the instances: a reverse proxy whose transport picks the
// instance.
func (r *Runner) proxy() http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "instance" // the transport sets the instance's address
			pr.SetXForwarded()
		},
		Transport:     &balancer{r: r, base: r.transport},
		FlushInterval: -1, // stream: server-sent events and long polls must not wait in a buffer
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if req.Context().Err() != nil {
				return // the client went away: nobody to answer, nothing failed on our side
			}
			r.mu.Lock()
			r.failed++
			r.mu.Unlock()
			if errors.Is(err, errNoInstance) {
				http.Error(w, "twice run: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			http.Error(w, "twice run: the instance did not answer", http.StatusBadGateway)
		},
	}
}

// balancer is the proxy's transport: it picks an instance for each request, counts what it
// passes to each, ejects one that stops answering, and tries a request once more on another
// instance when that is safe.
type balancer struct {
	r    *Runner
	base http.RoundTripper
}

func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	r := b.r
	r.mu.Lock()
	r.served++
	r.mu.Unlock()
	in := r.pick(req, nil)
	if in == nil {
		return nil, errNoInstance
	}
	resp, err := b.send(req, in)
	if err == nil || !replayable(req) || req.Context().Err() != nil {
		return resp, err
	}
	other := r.pick(req, in)
	if other == nil {
		return nil, err
	}
	return b.send(req, other)
}

// send passes req to in and keeps the instance's counts.
func (b *balancer) send(req *http.Request, in *instance) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Host = "127.0.0.1:" + strconv.Itoa(in.port)
	resp, err := b.base.RoundTrip(out)
	r := b.r
	if err != nil {
		r.mu.Lock()
		in.inflight--
		in.failures++
		in.fails++
		eject := in.healthy && in.fails >= r.cfg.FailAfter
		if eject {
			in.healthy = false
		}
		r.mu.Unlock()
		if eject {
			r.say("instance %d failed %d requests in a row: no traffic until it passes a health check", in.slot, r.cfg.FailAfter)
		}
		return nil, err
	}
	r.mu.Lock()
	in.fails = 0
	r.mu.Unlock()
	if r.cfg.Sticky {
		if c, err := req.Cookie(StickyCookie); err != nil || c.Value != strconv.Itoa(in.slot) {
			resp.Header.Add("Set-Cookie", (&http.Cookie{Name: StickyCookie, Value: strconv.Itoa(in.slot),
				Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}).String())
		}
	}
	done := func() {
		r.mu.Lock()
		in.inflight--
		r.mu.Unlock()
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgraded{ReadWriteCloser: rwc, done: done}
	} else {
		resp.Body = &counted{ReadCloser: resp.Body, done: done}
	}
	return resp, nil
}

// replayable says whether a request may be sent again after its connection failed: an
// idempotent method, and no body the first attempt may have consumed.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
	default:
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

// pick chooses the instance for req, not skip, and counts the request as in flight there:
// the sticky instance when --sticky and it may take requests, otherwise the next one in
// round robin. It returns nil when none may.
func (r *Runner) pick(req *http.Request, skip *instance) *instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	var in *instance
	if r.cfg.Sticky {
		if c, err := req.Cookie(StickyCookie); err == nil {
			if slot, ok := parseSticky(c.Value, len(r.instances)); ok {
				if cand := r.instances[slot-1]; cand != skip && cand.eligible() {
					in = cand
				}
			}
		}
	}
	for i := 0; in == nil && i < len(r.instances); i++ {
		cand := r.instances[(r.next+i)%len(r.instances)]
		if cand != skip && cand.eligible() {
			in = cand
			r.next = (r.next + i + 1) % len(r.instances)
		}
	}
	if in == nil {
		return nil
	}
	in.inflight++
	in.requests++
	return in
}

// parseSticky reads the sticky cookie's value: an instance's slot, 1 to n.
func parseSticky(v string, n int) (int, bool) {
	if len(v) == 0 || len(v) > 3 || v[0] == '0' {
		return 0, false
	}
	slot := 0
	for _, c := range []byte(v) {
		if c < '0' || c > '9' {
			return 0, false
		}
		slot = 10*slot + int(c-'0')
	}
	if slot > n {
		return 0, false
	}
	return slot, true
}

// counted calls done once, when the response body is closed.
type counted struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (c *counted) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.done)
	return err
}

// upgraded is counted for a connection switched to another protocol (a WebSocket): the
// proxy needs it to stay writable.
type upgraded struct {
	io.ReadWriteCloser
	once sync.Once
	done func()
}

func (u *upgraded) Close() error {
	err := u.ReadWriteCloser.Close()
	u.once.Do(u.done)
	return err
}

// waitIdle waits until no request is in flight on in, or ctx ends.
func (r *Runner) waitIdle(ctx context.Context, in *instance) bool {
	for {
		r.mu.Lock()
		n := in.inflight
		r.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}
