// Package httpx holds the pieces twice's HTTP middleware share: RFC 9457 problem responses,
// a response writer that runs a hook before the headers go out, and a response buffer that
// captures a response up to a limit.
package httpx

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
)

// ProblemType prefixes the type URI of every problem twice writes: "urn:twice:problem:" +
// a short name such as "idempotency-key-missing". Clients match on the whole URI.
const ProblemType = "urn:twice:problem:"

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// WriteProblem writes p as application/problem+json with p.Status. A type given as a short
// name is prefixed with [ProblemType]; the title defaults to the status text.
func WriteProblem(w http.ResponseWriter, p Problem) {
	if p.Type == "" {
		p.Type = "about:blank"
	} else if !hasScheme(p.Type) {
		p.Type = ProblemType + p.Type
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	body, _ := json.Marshal(p) // a struct of strings and an int always marshals
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("ETag")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ':':
			return i > 0
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return false
}

// HookWriter calls Before once, just before the response's headers are written (or when the
// handler returns without writing, through [HookWriter.Finish]), so a middleware can commit
// its state and still set headers such as a cookie. If Before returns false the handler's
// status and body are dropped: Before has written a response of its own.
type HookWriter struct {
	http.ResponseWriter
	Before func() bool

	done    bool // Before has run
	dropped bool // Before wrote its own response: swallow the handler's
	wrote   bool // headers have gone out
}

func (h *HookWriter) run() {
	if !h.done {
		h.done = true
		if h.Before != nil && !h.Before() {
			h.dropped = true
		}
	}
}

// WriteHeader implements http.ResponseWriter. An informational status (103 Early Hints,
// 100 Continue) goes out without running Before: it is not the response, and the handler
// may still change what Before writes (a session renewed after the hints must still send
// its cookie with the final headers).
func (h *HookWriter) WriteHeader(code int) {
	if informational(code) {
		if !h.dropped {
			h.ResponseWriter.WriteHeader(code)
		}
		return
	}
	h.run()
	if h.dropped {
		return
	}
	h.wrote = true
	h.ResponseWriter.WriteHeader(code)
}

// informational reports whether code is a 1xx status that a final one follows; 101
// Switching Protocols ends the HTTP response, so it counts as final.
func informational(code int) bool {
	return code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
}

// Write implements http.ResponseWriter.
func (h *HookWriter) Write(b []byte) (int, error) {
	h.run()
	if h.dropped {
		return len(b), nil
	}
	h.wrote = true
	return h.ResponseWriter.Write(b)
}

// Flush implements http.Flusher when the underlying writer does.
func (h *HookWriter) Flush() {
	h.run()
	if h.dropped {
		return
	}
	h.wrote = true
	_ = http.NewResponseController(h.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker when the underlying writer does.
func (h *HookWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.run()
	h.wrote = true
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (h *HookWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// Finish runs Before if nothing was written yet; the handler has returned.
func (h *HookWriter) Finish() { h.run() }

// HeadersWritten reports whether the response's headers have gone out.
func (h *HookWriter) HeadersWritten() bool { return h.wrote }

type unscopedKey struct{}

// MarkUnscoped returns r marked as having passed an idempotency middleware that found no
// principal to scope its key to, so a session middleware running later, too late to
// provide its user, can say so.
func MarkUnscoped(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), unscopedKey{}, true))
}

// Unscoped reports whether an idempotency middleware found no principal for the request of
// ctx before it reached here.
func Unscoped(ctx context.Context) bool {
	v, _ := ctx.Value(unscopedKey{}).(bool)
	return v
}
