package idempotency

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// While the database refuses every write, the outcomes waiting for it stay within bounds:
// past pendingBytes responses are kept as their status only, past maxPending new claims
// are refused, and Close gives the rest up without hanging.
func TestOutboxBounds(t *testing.T) {
	t.Parallel()
	k := refused(t)
	big := make([]byte, 1<<20)
	for i := range pendingBytes>>20 + 8 {
		k.settle(context.Background(), outcome{p: Params{Key: string(rune('a' + i%26))}, res: &Response{Status: 201, Body: big}, state: stateDone})
	}
	k.out.mu.Lock()
	bytes, n, last := k.out.bytes, len(k.out.queue), k.out.queue[len(k.out.queue)-1]
	k.out.mu.Unlock()
	if bytes > pendingBytes || n != pendingBytes>>20+8 || last.state != stateNotStored || last.res.Status != 201 || last.res.Body != nil {
		t.Errorf("%d outcomes holding %d bytes, the last %+v", n, bytes, last)
	}
	if k.out.full() {
		t.Fatal("full long before maxPending")
	}
	for range maxPending {
		k.settle(context.Background(), outcome{p: Params{Key: "x"}})
	}
	if !k.out.full() {
		t.Error("not full after maxPending outcomes")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := k.Close(ctx); err == nil || !strings.Contains(err.Error(), "could not be recorded") {
		t.Errorf("Close = %v", err)
	}
	// After Close nothing is queued and no writer starts (goleak checks the goroutine).
	k.settle(context.Background(), outcome{p: Params{Key: "late"}})
	k.out.mu.Lock()
	defer k.out.mu.Unlock()
	if k.out.running || len(k.out.queue) != 0 {
		t.Error("an outcome was queued after Close")
	}
}

// Abandon stops a writer retrying against a database that refuses every write, and drops
// its outcomes; later ones are dropped unqueued, and nothing is logged for them.
func TestAbandonDropsTheBacklog(t *testing.T) {
	t.Parallel()
	k := refused(t)
	k.settle(context.Background(), outcome{p: Params{Key: "a"}})
	k.Abandon(context.Background())
	k.settle(context.Background(), outcome{p: Params{Key: "late"}})
	k.out.mu.Lock()
	defer k.out.mu.Unlock()
	if k.out.running || len(k.out.queue) != 0 {
		t.Errorf("after Abandon: writer running %v, %d outcomes queued", k.out.running, len(k.out.queue))
	}
}

// refused returns keys on a store that refuses every write: it is closed.
func refused(t *testing.T) *Keys {
	t.Helper()
	s := testdb.New(t, store.SQLite).Open(t, nil)
	k, err := New(block.Deps{Store: s, Service: "shop", Instance: "i1", Logger: testdb.Logger(t)}, Config{Scope: func(*http.Request) string { return "c" }})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return k
}
