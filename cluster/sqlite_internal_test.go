//go:build unix

package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A watcher connected to its successor's socket learns of the successor's end from the
// connection, not from trying the lock: with the lock tried only every hour, with or without
// a connection, the wait still ends when the holder goes.
func TestLivenessSocketEndsTheWait(t *testing.T) {
	defer func(b, p time.Duration) { socketBackstop, livenessPoll = b, p }(socketBackstop, livenessPoll)
	socketBackstop, livenessPoll = time.Hour, time.Hour
	db := filepath.Join(t.TempDir(), "t.db")
	holder, watcher := newFileLiveness(db).(*fileLiveness), newFileLiveness(db).(*fileLiveness)
	defer watcher.close()
	const key = 42
	if err := holder.hold(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if holder.listener == nil {
		t.Fatalf("no socket at %s", holder.socketPath(key))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		gone bool
		err  error
	}
	done := make(chan result, 1)
	go func() {
		gone, err := watcher.watch(ctx, key)
		done <- result{gone, err}
	}()
	// The holder lives: the watcher waits (on its connection, once one is made).
	select {
	case r := <-done:
		t.Fatalf("the wait ended while the holder lives: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	holder.close() // as the kernel does for a dead process: the lock and the connections go
	select {
	case r := <-done:
		if !r.gone || r.err != nil {
			t.Fatalf("watch = %v, %v; want the holder gone", r.gone, r.err)
		}
	case <-ctx.Done():
		t.Fatal("the wait did not end when the holder went: the connection's end was not noticed")
	}
}
