package occ

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"

	"github.com/twicehq/twice/internal/httpx"
)

// HTTPConfig configures [Preconditions].
type HTTPConfig struct {
	// RequireIfMatch answers a request of Methods without If-Match with 428 Precondition
	// Required, so no client can update without saying which version it saw. Defaults to
	// false.
	RequireIfMatch bool
	// Methods are the unsafe methods If-Match is required on. Defaults to PUT, PATCH and
	// DELETE.
	Methods []string
	// Logger receives errors of the version lookup. Defaults to slog.Default().
	Logger *slog.Logger
}

// VersionFunc returns the current version of the resource r addresses, and whether it
// exists.
type VersionFunc func(r *http.Request) (version int64, exists bool, err error)

type expectedKey struct{}

// Expected returns the version the request's If-Match matched, to pass as the Version of
// the handler's [Versions.Update] so that a change made since the check is refused.
func Expected(ctx context.Context) (int64, bool) {
	v, ok := ctx.Value(expectedKey{}).(int64)
	return v, ok
}

// SetETag sets the response's ETag to version's strong tag.
func SetETag(w http.ResponseWriter, version int64) { w.Header().Set("ETag", ETag(version)) }

// Preconditions evaluates If-Match and If-None-Match against the version current returns,
// in the order of RFC 9110, 13.2.2: a failing If-Match gives 412; a matching If-None-Match
// gives 304 on GET and HEAD and 412 otherwise; a request of cfg.Methods without If-Match
// gives 428 when required; a malformed header gives 400. current runs only for requests
// that carry a precondition. Refusals are problem+json.
func Preconditions(cfg HTTPConfig, current VersionFunc) func(http.Handler) http.Handler {
	if cfg.Methods == nil {
		cfg.Methods = []string{http.MethodPut, http.MethodPatch, http.MethodDelete}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ifMatch, hasMatch, err1 := ParseIfMatch(r.Header.Values("If-Match"))
			ifNone, hasNone, err2 := ParseIfNoneMatch(r.Header.Values("If-None-Match"))
			if err := errors.Join(err1, err2); err != nil {
				httpx.WriteProblem(w, httpx.Problem{Type: "precondition-malformed", Status: http.StatusBadRequest, Detail: err.Error()})
				return
			}
			if !hasMatch && cfg.RequireIfMatch && slices.Contains(cfg.Methods, r.Method) {
				httpx.WriteProblem(w, httpx.Problem{Type: "precondition-required", Status: http.StatusPreconditionRequired,
					Detail: "send If-Match with the ETag of the version you are changing"})
				return
			}
			if !hasMatch && !hasNone {
				next.ServeHTTP(w, r)
				return
			}
			version, exists, err := current(r)
			if err != nil {
				cfg.Logger.Error("occ: cannot read the current version", "err", err)
				httpx.WriteProblem(w, httpx.Problem{Status: http.StatusInternalServerError})
				return
			}
			etag := ETag(version)
			if hasMatch && !(exists && ifMatch.MatchStrong(etag)) {
				httpx.WriteProblem(w, httpx.Problem{Type: "precondition-failed", Status: http.StatusPreconditionFailed,
					Detail: "the resource has changed since you read it (or does not exist); read it again"})
				return
			}
			if hasNone && exists && ifNone.MatchWeak(etag) {
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					w.Header().Set("ETag", etag)
					w.WriteHeader(http.StatusNotModified)
					return
				}
				httpx.WriteProblem(w, httpx.Problem{Type: "precondition-failed", Status: http.StatusPreconditionFailed,
					Detail: "the resource already exists"})
				return
			}
			ctx := r.Context()
			if hasMatch {
				ctx = context.WithValue(ctx, expectedKey{}, version)
			}
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// WriteError answers a failed versioned update: 412 for a conflict (the resource changed
// since the client read it), 404 for a missing row. It reports false, writing nothing, for
// any other error.
func WriteError(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, ErrConflict):
		httpx.WriteProblem(w, httpx.Problem{Type: "precondition-failed", Status: http.StatusPreconditionFailed,
			Detail: "the resource has changed since you read it; read it again"})
	case errors.Is(err, ErrNotFound):
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusNotFound})
	default:
		return false
	}
	return true
}
