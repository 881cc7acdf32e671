//go:build unix

package bus

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// openWoken opens n buses of one service on db's file, each on a store of its own as
// separate processes would be. They poll the table once an hour: a signal that arrives
// sooner came through the sockets.
func openWoken(t *testing.T, db testdb.DB, n int) []*sqliteBus {
	t.Helper()
	ctx := context.Background()
	if _, err := store.NewMigrator(db.Open(t, nil), Component()).Up(ctx); err != nil {
		t.Fatal(err)
	}
	var buses []*sqliteBus
	for i := range n {
		b, err := NewStore(ctx, db.Open(t, nil), Config{Service: "svc", Instance: "i" + string(rune('0'+i)),
			Poll: time.Hour, Retention: 3 * time.Hour, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(ctx) })
		sb := b.(*sqliteBus)
		if sb.waker == nil {
			t.Fatal("the bus polls: it could not set up its socket")
		}
		buses = append(buses, sb)
	}
	return buses
}

// receive returns a channel that gets the payload of every message on channel c that b
// delivers.
func receive(b Bus, c string) <-chan string {
	got := make(chan string, 100)
	b.Subscribe(c, func(m Message) {
		if !m.Lost {
			got <- string(m.Payload)
		}
	})
	return got
}

// await fails t unless want arrives on got; the wait only catches a signal that never
// comes, far longer than any delivery and far shorter than the hourly poll.
func await(t *testing.T, got <-chan string, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case p := <-got:
			if p == want {
				return
			}
		case <-deadline:
			t.Fatalf("%q did not arrive", want)
		}
	}
}

// Two buses on one file wake each other: a Publish, and a PublishTx whose transaction
// commits after the call, arrive although neither bus polls.
func TestSQLiteWakesOtherBuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t, store.SQLite)
	buses := openWoken(t, db, 2)
	got := receive(buses[1], "c")

	if err := buses[0].Publish(ctx, "c", []byte("published")); err != nil {
		t.Fatal(err)
	}
	await(t, got, "published")

	tx, err := buses[0].s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := buses[0].PublishTx(ctx, tx, "c", []byte("in a transaction")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	await(t, got, "in a transaction")
}

// A socket file left by a process that died without closing its bus (SIGKILL) does not
// keep a publish from waking the others, and the publish removes it.
func TestSQLiteRemovesStaleSocket(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t, store.SQLite)
	dir := strings.TrimPrefix(db.DSN, "sqlite:") + ".bus"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, socketPrefix("svc")+"dead")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: stale, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // leaves the file, as a killed process does
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("the stale socket is not there to begin with: %v", err)
	}

	buses := openWoken(t, db, 2)
	got := receive(buses[1], "c")
	if err := buses[0].Publish(ctx, "c", []byte("past the dead")); err != nil {
		t.Fatal(err)
	}
	await(t, got, "past the dead")
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale socket is still there after a publish (%v)", err)
	}
}

// A database path too long for a socket address still gets its wake-ups, through a short
// link to the directory, made again if it disappears; the sockets stay beside the file.
func TestSQLiteWakesOnLongPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), strings.Repeat("a-rather-long-directory-name-", 5))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "twice.db")
	if len(path+".bus/") <= maxSocketPath {
		t.Fatalf("the path %s is too short to test", path)
	}
	buses := openWoken(t, testdb.DB{Dialect: store.SQLite, DSN: "sqlite:" + path}, 2)
	t.Cleanup(func() { os.Remove(buses[0].waker.(*sockWaker).via) })
	got := receive(buses[1], "c")
	if err := buses[0].Publish(ctx, "c", []byte("long way")); err != nil {
		t.Fatal(err)
	}
	await(t, got, "long way")
	// A cleaner of the temporary directory removes the link: the next publish makes it again.
	if err := os.Remove(buses[0].waker.(*sockWaker).via); err != nil {
		t.Fatal(err)
	}
	if err := buses[0].Publish(ctx, "c", []byte("relinked")); err != nil {
		t.Fatal(err)
	}
	await(t, got, "relinked")
	entries, err := os.ReadDir(path + ".bus")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("%d entries beside the database, want the 2 sockets", len(entries))
	}
}

// Where the socket directory cannot be made, the bus polls often instead, with a warning:
// a signal still arrives although Poll is an hour.
func TestSQLitePollsWithoutSocketDirectory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t, store.SQLite)
	// A file where the directory should be: unlike a read-only directory, it stops root too.
	if err := os.WriteFile(strings.TrimPrefix(db.DSN, "sqlite:")+".bus", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewMigrator(db.Open(t, nil), Component()).Up(ctx); err != nil {
		t.Fatal(err)
	}
	var buses []Bus
	for _, id := range []string{"i0", "i1"} {
		b, err := NewStore(ctx, db.Open(t, nil), Config{Service: "svc", Instance: id,
			Poll: time.Hour, Retention: 3 * time.Hour, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(ctx) })
		if b.(*sqliteBus).waker != nil {
			t.Fatal("the bus has a socket where no directory could be made")
		}
		buses = append(buses, b)
	}
	got := receive(buses[1], "c")
	if err := buses[0].Publish(ctx, "c", []byte("polled")); err != nil {
		t.Fatal(err)
	}
	await(t, got, "polled")
}
