package metrics

import (
	"net/http"
	"time"
)

// Middleware counts the requests next serves by route, method and status class
// (twice_http_requests_total) and times them (twice_http_request_duration_seconds). The
// route is the pattern an http.ServeMux matched (http.Request.Pattern, Go 1.22+, e.g.
// "GET /items/{id}"), which the mux sets on the request it receives: wrap the mux itself
// with Middleware, or, to count also what the middlewares around the mux answer (which
// copy the request, as the session and idempotency middlewares do), wrap the whole chain
// with [Metrics.MiddlewareFor]. A request no pattern matched counts under route
// "unmatched", and a method outside the standard ones under "other", so no label takes a
// value a client chooses.
//
// Request-based availability (seed 003: successful requests over all requests), counting a
// response below 500 as a success, is
//
//	sum(rate(twice_http_requests_total{code!="5xx"}[5m])) / sum(rate(twice_http_requests_total[5m]))
//
// over every instance of a service (sum by (instance_id) for each instance's own). A
// request whose handler panics counts as 5xx (the panic goes on).
//
// Each request is also counted on the node ([twice.Node.CountRequest]), whether or not
// Prometheus scrapes these series: every instance reports its counts with its heartbeat,
// and [twice.Status] and the dashboard show each instance's availability since it started.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return m.middleware(nil, next)
}

// MiddlewareFor returns a middleware like [Metrics.Middleware] that names each request's
// route by the pattern of mux that matches it (mux.Handler), looked up before the request
// is served, so it may wrap middlewares that copy the request on its way to mux:
//
//	handler := m.MiddlewareFor(mux)(node.Sessions().Middleware(mux))
func (m *Metrics) MiddlewareFor(mux *http.ServeMux) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler { return m.middleware(mux, next) }
}

func (m *Metrics) middleware(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := ""
		if mux != nil {
			_, route = mux.Handler(r)
		}
		sw := &statusWriter{ResponseWriter: w}
		returned := false
		defer func() {
			// A deferred count sees a panicking handler too (it goes on panicking: this
			// middleware only counts, the server or an outer handler decides).
			code := sw.status
			switch {
			case !returned:
				code = http.StatusInternalServerError
			case code == 0:
				code = http.StatusOK // nothing written: net/http sends 200
			}
			if mux == nil {
				route = r.Pattern
			}
			m.count(route, r.Method, code, start)
		}()
		next.ServeHTTP(sw, r)
		returned = true
	})
}

func (m *Metrics) count(route, method string, code int, start time.Time) {
	if route == "" {
		route = "unmatched"
	}
	method = methodLabel(method)
	m.node.CountRequest(code)
	m.requests.WithLabelValues(route, method, codeClass(code)).Inc()
	m.reqDuration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
}

func codeClass(code int) string {
	switch {
	case code >= 500:
		return "5xx"
	case code >= 400:
		return "4xx"
	case code >= 300:
		return "3xx"
	case code >= 200:
		return "2xx"
	default:
		return "1xx"
	}
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// statusWriter records the status a handler sent. Unwrap lets http.ResponseController
// reach the writer underneath (Flush, Hijack, deadlines).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush() // as http.Flusher, which returns nothing
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
