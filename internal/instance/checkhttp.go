package instance

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

// The checker's HTTP routes, served by every instance that runs [CheckHTTP]:
//
//	POST /login          start a session (its cookie comes back)
//	POST /put?k=K&v=V    in the session, set key K to the integer V
//	GET  /get?k=K        the session's value of K
//	POST /pay            with an Idempotency-Key: record one effect row for the key, in the
//	                     same transaction as the claim and the stored response, in
//	                     CheckPayTable
//
// (GET /converge is [CheckConverge]'s.)
//
// CheckAuth is the Authorization header the checker's client sends, which scopes its
// idempotency keys to one client.
const CheckAuth = "Bearer checker"

// CheckHTTP is the workload "check-http" (see [CheckWorkloads]): the routes above.
type CheckHTTP struct{}

// Name implements Workload.
func (CheckHTTP) Name() string { return "check-http" }

func (CheckHTTP) start(_ context.Context, in *env) (func(), error) {
	node := in.node
	sessions := node.Sessions().Middleware
	in.handle("POST /login", sessions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := session.SetUser(r.Context(), "checker"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	in.handle("POST /put", sessions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseInt(r.URL.Query().Get("v"), 10, 64)
		if err != nil || session.UserID(r.Context()) == "" {
			http.Error(w, "bad request or no session", http.StatusBadRequest)
			return
		}
		if err := session.Put(r.Context(), r.URL.Query().Get("k"), v); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// The write happens when the headers go out; a failure then is a 500.
		if err := session.From(r.Context()).Save(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	in.handle("GET /get", sessions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if session.UserID(r.Context()) == "" {
			http.Error(w, "no session", http.StatusNotFound)
			return
		}
		v, _ := session.Get[int64](r.Context(), r.URL.Query().Get("k"))
		fmt.Fprint(w, v)
	})))
	in.handle("POST /pay", node.Idempotency().HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
		key, err := idempotency.ParseKey(r.Header.Values("Idempotency-Key"))
		if err != nil {
			return err
		}
		_, err = tx.Exec(r.Context(), "INSERT INTO "+CheckPayTable+" (service, idem_key, instance) VALUES ($1, $2, $3)",
			node.Service(), key, node.ID())
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusCreated)
		return nil
	}))
	return func() {}, nil
}
