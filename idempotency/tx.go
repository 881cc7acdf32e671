package idempotency

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/twicehq/twice/internal/httpx"
	"github.com/twicehq/twice/store"
)

// Errors of [Keys.DoTx] when the key was claimed before.
var (
	// ErrInProgress: a request with the key is running elsewhere (HTTP 409).
	ErrInProgress = errors.New("idempotency: a request with this key is in progress")
	// ErrKeyReused: the key was used for a request with a different fingerprint (HTTP 422).
	ErrKeyReused = errors.New("idempotency: key reused for a different request")
	// ErrServerError: fn's response has a 5xx status, which is not stored unless
	// Config.StoreServerErrors is set; the transaction must roll back so that the retry
	// runs fn again. DoTx and Do return it with the response.
	ErrServerError = errors.New("idempotency: a 5xx response is not stored (Config.StoreServerErrors is off); roll the transaction back")
)

// Params name one idempotent operation.
type Params struct {
	// Scope is the client the key belongs to.
	Scope string
	// Key is the client's idempotency key.
	Key string
	// Fingerprint identifies the request; the same key with another fingerprint is
	// refused with [ErrKeyReused]. See [Fingerprint].
	Fingerprint []byte
}

// Response is an operation's result as stored and replayed.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Replayed is set when this is the stored result of an earlier run, not a new one.
	Replayed bool
	// NotStored is set on a replay whose body was too large to keep: only Status is known.
	NotStored bool

	partial bool // the body is not held whole (streamed, or kept out of memory)
}

type record struct {
	mismatch bool
	state    int
	alive    bool // the owner of a running claim still heartbeats
	res      Response
}

// claimOrGet claims p's key in q, or returns the record of whoever holds it.
func (k *Keys) claimOrGet(ctx context.Context, q store.Querier, p Params) (bool, *record, error) {
	if p.Fingerprint == nil {
		p.Fingerprint = []byte{} // the column is NOT NULL; no fingerprint matches only none
	}
	for range 3 {
		var owner string
		err := q.QueryRow(ctx, k.q.claim, k.s.NowArg(), k.d.Service, p.Scope, p.Key, p.Fingerprint, k.d.Instance,
			k.cfg.Retention.Milliseconds(), k.cfg.DeadOwnerGrace.Milliseconds()).Scan(&owner)
		if err == nil {
			return true, nil, nil
		}
		if !errors.Is(err, store.ErrNoRows) {
			return false, nil, fmt.Errorf("idempotency: claim: %w", err)
		}
		rec, found, err := k.get(ctx, q, p)
		if err != nil || found {
			return false, rec, err
		}
		// Released or expired between the two statements: claim again.
	}
	return false, &record{state: stateRunning}, nil
}

func (k *Keys) get(ctx context.Context, q store.Querier, p Params) (*record, bool, error) {
	var fp, header, body []byte
	rec := &record{}
	err := q.QueryRow(ctx, k.q.get, k.s.NowArg(), k.d.Service, p.Scope, p.Key, k.cfg.DeadOwnerGrace.Milliseconds()).
		Scan(&fp, &rec.state, &rec.res.Status, &header, &body, &rec.alive)
	if errors.Is(err, store.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("idempotency: read: %w", err)
	}
	rec.mismatch = string(fp) != string(p.Fingerprint)
	rec.res.Body, rec.res.Replayed, rec.res.NotStored = body, true, rec.state == stateNotStored
	if len(header) > 0 {
		if err := json.Unmarshal(header, &rec.res.Header); err != nil {
			return nil, false, fmt.Errorf("idempotency: stored headers: %w", err)
		}
	}
	return rec, true, nil
}

// complete stores res as the outcome of p's claim.
func (k *Keys) complete(ctx context.Context, q store.Querier, p Params, res *Response, state int) error {
	var header, body []byte
	if state == stateDone {
		var err error
		if header, err = json.Marshal(storedHeaders(res.Header)); err != nil {
			return err
		}
		body = res.Body
		if body == nil {
			body = []byte{}
		}
	}
	n, err := q.Exec(ctx, k.q.complete, k.d.Service, p.Scope, p.Key, k.d.Instance, state, res.Status, header, body)
	if err != nil {
		return fmt.Errorf("idempotency: store response: %w", err)
	}
	if n == 0 {
		k.log.Warn("idempotency: this instance's claim was taken over while the request ran (it was counted dead); the request may have run twice",
			"key", p.Key)
	}
	return nil
}

func (k *Keys) release(ctx context.Context, p Params) error {
	_, err := k.s.Exec(ctx, k.q.release, k.d.Service, p.Scope, p.Key, k.d.Instance)
	return err
}

// Do runs fn at most once for p's key, in a transaction it opens: the claim, fn's writes
// through tx and the response fn returns commit together or not at all. A later call with
// the same key returns the stored response with Replayed set, without calling fn; see
// [Keys.DoTx] for the errors.
func (k *Keys) Do(ctx context.Context, p Params, fn func(ctx context.Context, tx store.Tx) (*Response, error)) (*Response, error) {
	var res *Response
	err := k.s.InTx(ctx, func(tx store.Tx) error {
		var err error
		res, err = k.doTx(ctx, tx, p, func(ctx context.Context) (*Response, error) { return fn(ctx, tx) })
		return err
	})
	if errors.Is(err, ErrServerError) {
		return res, err
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// DoTx runs fn at most once for p's key inside the caller's transaction tx (*sql.Tx,
// pgx.Tx or store.Tx): fn makes its writes through tx, and the claim and the response it
// returns commit with them, so a crash can never leave the effect without the stored
// response or the reverse. If the key was used before, fn is not called and DoTx returns
// the stored response (Replayed set), or [ErrKeyReused] for a different fingerprint, or
// [ErrInProgress] while a middleware request with the key runs. If fn fails, roll tx back:
// nothing is claimed. A response with a 5xx status comes back with [ErrServerError] unless
// Config.StoreServerErrors is set: roll tx back then too. On PostgreSQL a concurrent DoTx with the same key waits for the first
// to commit, then replays its response.
func (k *Keys) DoTx(ctx context.Context, tx any, p Params, fn func(ctx context.Context) (*Response, error)) (*Response, error) {
	return k.doTx(ctx, tx, p, fn)
}

func (k *Keys) doTx(ctx context.Context, tx any, p Params, fn func(ctx context.Context) (*Response, error)) (*Response, error) {
	if p.Key == "" || len(p.Key) > MaxKeyLen {
		return nil, fmt.Errorf("%w: key must be 1 to %d bytes", ErrKeyInvalid, MaxKeyLen)
	}
	q, err := k.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	claimed, rec, err := k.claimOrGet(ctx, q, p)
	if err != nil {
		return nil, err
	}
	if !claimed {
		return rec.result()
	}
	res, err := fn(ctx)
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = &Response{Status: http.StatusOK}
	}
	state, keep := k.verdict(res)
	if !keep {
		return res, ErrServerError
	}
	if err := k.complete(ctx, q, p, res, state); err != nil {
		return nil, err
	}
	return res, nil
}

func (rec *record) result() (*Response, error) {
	switch {
	case rec.mismatch:
		return nil, ErrKeyReused
	case rec.state == stateRunning:
		return nil, ErrInProgress
	}
	return &rec.res, nil
}

// HandlerTx serves the Idempotency-Key for a handler that writes to the same database: fn
// runs inside a transaction, with the key claimed in it, and its response is stored in it
// too. Nothing reaches the client before the commit, and an instance killed at any point
// leaves either everything (effect, key, response) or nothing, so the handler's effect
// happens exactly once. fn returning an error rolls everything back and answers 500; the
// client may retry with the same key. A 5xx response from fn rolls everything back too and
// is sent as it is, unless Config.StoreServerErrors is set, as the middleware releases the
// key. A response over MaxResponseBytes waits for the commit in a temporary file, not in
// memory, and is sent whole but not stored, as the middleware does (a retry is told so).
// Requests without a key (where none is required) run fn in a transaction too. On SQLite
// the transaction holds the database's single writer: keep fn short.
func (k *Keys) HandlerTx(fn func(w http.ResponseWriter, r *http.Request, tx store.Tx) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, r, ok, done := k.prepare(w, r)
		if done {
			return
		}
		ctx := r.Context()
		rec := httpx.NewRecorder(k.cfg.MaxResponseBytes)
		defer rec.Close()
		var res *Response
		err := k.s.InTx(ctx, func(tx store.Tx) error {
			run := func(context.Context) (*Response, error) {
				err := cmp.Or(fn(rec, r, tx), rec.Err())
				status, header, body := rec.Result()
				return &Response{Status: status, Header: header, Body: body, partial: rec.Spilled()}, err
			}
			var err error
			if ok {
				res, err = k.doTx(ctx, tx, p, run)
			} else if res, err = run(ctx); err == nil {
				if _, keep := k.verdict(res); !keep {
					err = ErrServerError
				}
			}
			return err
		})
		switch {
		case errors.Is(err, ErrKeyReused):
			k.answer(w, &record{mismatch: true})
		case errors.Is(err, ErrInProgress):
			k.answer(w, &record{state: stateRunning})
		case errors.Is(err, ErrServerError):
			k.send(w, rec, res.Header, res.Status, false) // rolled back: the retry runs fn again
		case err != nil:
			k.log.Error("idempotency: handler failed; its transaction was rolled back", "err", err)
			problem(w, http.StatusInternalServerError, "request-failed", "the request failed and nothing was changed; retry with the same key")
		case res.Replayed:
			rec := &record{state: stateDone, res: *res}
			if res.NotStored {
				rec.state = stateNotStored
			}
			k.answer(w, rec)
		default:
			k.send(w, rec, res.Header, res.Status, ok && res.partial)
		}
	})
}

// send writes the response fn recorded; notStored says the stored outcome is its status
// only, which the client is told as by the middleware.
func (k *Keys) send(w http.ResponseWriter, rec *httpx.Recorder, header http.Header, status int, notStored bool) {
	h := w.Header()
	for name, v := range header {
		h[name] = v
	}
	if notStored {
		h.Set(storedHeader, "false")
	}
	w.WriteHeader(status)
	if err := rec.WriteBody(w); err != nil {
		k.log.Debug("idempotency: sending a committed response failed", "err", err)
	}
}
