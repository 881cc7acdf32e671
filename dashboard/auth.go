package dashboard

import (
	"context"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
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

// authenticate resolves the caller from the request: with no token configured, a request
// from loopback (or any, with NoAuth) is an operator's (a viewer's with ReadOnly);
// otherwise the token, given as the basic-auth password or a bearer token, decides.
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
	case db.cfg.NoAuth:
		w.role = operator
	case db.cfg.Token == "" && db.cfg.ReadOnlyToken == "":
		if !fromLoopback(r) {
			return who{}
		}
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

// fromLoopback reports whether r came from this machine. Behind a reverse proxy on the
// same machine every request does: give such a dashboard a token.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// guard lets in the requests authenticate accepts, asking the others for basic auth.
func (db *Dashboard) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := db.authenticate(r)
		switch {
		case caller.role != noRole:
		case db.cfg.Token == "" && db.cfg.ReadOnlyToken == "":
			http.Error(w, "dashboard: without a token (Config.Token) only requests from this machine are served", http.StatusForbidden)
			return
		default:
			w.Header().Set("WWW-Authenticate", `Basic realm="twice dashboard", charset="UTF-8"`)
			http.Error(w, "dashboard: the access token is needed (as the basic-auth password)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, caller)))
	})
}
