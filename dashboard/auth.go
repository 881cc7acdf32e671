package dashboard

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
)

// role is what a request may do.
type role int

const (
	noRole   role = iota
	viewer        // may look
	operator      // may look and act
)

// who is the authenticated caller: a name for the log and a role.
type who struct {
	name string
	role role
}

type whoKey struct{}

func whoOf(ctx context.Context) who {
	w, _ := ctx.Value(whoKey{}).(who)
	return w
}

// authenticate resolves the caller from the request: with no token configured everyone
// is an operator (a viewer with ReadOnly); otherwise the token, given as the basic-auth
// password or a bearer token, decides.
func (db *Dashboard) authenticate(r *http.Request) who {
	user, pass, basic := r.BasicAuth()
	token := pass
	if !basic {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	name := user
	if name == "" {
		name = r.RemoteAddr
	}
	w := who{name: name}
	switch {
	case db.cfg.Token == "" && db.cfg.ReadOnlyToken == "":
		w.role = operator
	case db.cfg.Token != "" && equal(token, db.cfg.Token):
		w.role = operator
	case db.cfg.ReadOnlyToken != "" && equal(token, db.cfg.ReadOnlyToken):
		w.role = viewer
	default:
		return who{}
	}
	if db.cfg.ReadOnly {
		w.role = min(w.role, viewer)
	}
	return w
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// guard lets in the requests authenticate accepts, asking the others for basic auth.
func (db *Dashboard) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := db.authenticate(r)
		if caller.role == noRole {
			w.Header().Set("WWW-Authenticate", `Basic realm="twice dashboard", charset="UTF-8"`)
			http.Error(w, "the dashboard needs its access token (as the basic-auth password)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, caller)))
	})
}
