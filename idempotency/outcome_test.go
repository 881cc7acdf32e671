package idempotency_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

// poll sends c to h until want says the answer is the expected one; the deadline only
// catches "never".
func poll(t *testing.T, h http.Handler, c call, what string, want func(*http.Response) bool) *http.Response {
	t.Helper()
	var res *http.Response
	testnode.EventuallyNil(t, 30*time.Second, func() error {
		if res = do(h, c); !want(res) {
			return fmt.Errorf("%s: still %d %v", what, res.StatusCode, res.Header)
		}
		return nil
	})
	return res
}

// A request whose outcome could not be written because the database blinked is not left
// claimed for the retention: the outcome is written once the database is back, and the
// retry gets the stored response instead of 409.
func TestOutcomeWrittenAfterABlip(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		b := testdb.NewBlip(t, db)
		n := node(t, b.DB, twice.Config{})
		var runs atomic.Int32
		h := n.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if runs.Add(1) == 1 {
				b.Start() // between the claim and the outcome
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte("order 1"))
		}))
		if res := do(h, call{key: "k-blip"}); res.StatusCode != 201 || body(t, res) != "order 1" {
			t.Fatalf("first: %d", res.StatusCode)
		}
		// Still down: the key is claimed (409) or unreadable (503), and never runs again.
		if res := do(h, call{key: "k-blip"}); res.StatusCode != 409 && res.StatusCode != 503 {
			t.Errorf("during the blip: %d", res.StatusCode)
		}
		b.End()
		res := poll(t, h, call{key: "k-blip"}, "the outcome never landed after the database came back", func(res *http.Response) bool {
			return res.StatusCode == 201
		})
		if body(t, res) != "order 1" || res.Header.Get(idempotency.ReplayedHeader) != "true" || runs.Load() != 1 {
			t.Errorf("after the blip: %q replayed %q, runs %d", body(t, res), res.Header.Get(idempotency.ReplayedHeader), runs.Load())
		}
	})
}

// Closing a node while an outcome cannot be written does not hang: Close reports what it
// dropped, and the key is freed by the instance's liveness (it could not even leave the
// cluster), so a retry on another instance runs the request again instead of getting 409
// for the retention.
func TestCloseDropsUnwrittenOutcomes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		b := testdb.NewBlip(t, db)
		grace := twice.Config{Idempotency: idempotency.Config{DeadOwnerGrace: 100 * time.Millisecond}}
		a, other := node(t, b.DB, grace), node(t, db, grace)
		var runs atomic.Int32
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if runs.Add(1) == 1 {
				b.Start()
			}
			w.WriteHeader(http.StatusCreated)
		})
		if res := do(a.Idempotency().Middleware(handler), call{key: "k-close"}); res.StatusCode != 201 {
			t.Fatalf("first: %d", res.StatusCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if err := a.Close(ctx); err == nil || !strings.Contains(err.Error(), "1 request outcomes could not be recorded") {
			t.Errorf("Close = %v", err)
		}
		b.End()
		poll(t, other.Idempotency().Middleware(handler), call{key: "k-close"}, "the closed owner's claim was never freed", func(res *http.Response) bool {
			return res.StatusCode == 201
		})
		if runs.Load() != 2 {
			t.Errorf("runs %d", runs.Load())
		}
	})
}

// A request that finishes after Abandon (a crash, in twicetest.Crash) has its outcome
// dropped, unwritten: its key stays claimed by its instance, so a retry is told the
// request is in flight rather than given a stored response.
func TestAbandonLeavesTheKeyClaimed(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		n := node(t, db, twice.Config{})
		var runs atomic.Int32
		h := n.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if runs.Add(1) == 1 {
				n.Idempotency().Abandon(r.Context()) // between the claim and the outcome
			}
			w.WriteHeader(http.StatusCreated)
		}))
		if res := do(h, call{key: "k-crash"}); res.StatusCode != 201 {
			t.Fatalf("first: %d", res.StatusCode)
		}
		if res := do(h, call{key: "k-crash"}); res.StatusCode != 409 || runs.Load() != 1 {
			t.Fatalf("the retry after Abandon: %d, runs %d; want 409, the key still claimed", res.StatusCode, runs.Load())
		}
	})
}
