package testdb

import (
	"context"
	"net/url"
	"sync"
	"testing"

	"github.com/twicehq/twice/internal/faultproxy"
	"github.com/twicehq/twice/store"
)

// Blip cuts the stores opened with its DB off the database while it is on: on PostgreSQL a
// proxy in front of the server drops every connection and refuses new ones; on SQLite
// another connection holds the file's write lock, and the stores wait only 100 ms for it
// (reads still work, as they do while a writer holds the file).
type Blip struct {
	// DB is the database with the DSN to open the cut-off stores with.
	DB DB

	start, end func()
	mu         sync.Mutex
	on         bool
}

// NewBlip returns a blip over db, off. One still on when the test ends (a test that
// failed meanwhile) is ended by its cleanup.
func NewBlip(t testing.TB, db DB) *Blip {
	t.Helper()
	var b *Blip
	if db.Dialect == store.SQLite {
		b = sqliteBlip(t, db)
	} else {
		b = proxyBlip(t, db)
	}
	t.Cleanup(b.End)
	return b
}

// Proxied returns dsn (a PostgreSQL URL) with its host:port replaced by a new fault
// proxy's, closed when t ends, and the proxy.
func Proxied(t testing.TB, dsn string) (string, *faultproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	u.Host = p.Addr()
	return u.String(), p
}

func proxyBlip(t testing.TB, db DB) *Blip {
	dsn, p := Proxied(t, db.DSN)
	b := &Blip{DB: db, start: func() { p.Set(faultproxy.Drop, 0) }, end: func() { p.Set(faultproxy.Pass, 0) }}
	b.DB.DSN = dsn
	return b
}

func sqliteBlip(t testing.TB, db DB) *Blip {
	b := &Blip{DB: db}
	b.DB.DSN += "?busy_timeout=100"
	var held, release chan struct{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	b.start = func() {
		held, release = make(chan struct{}), make(chan struct{})
		wg.Go(func() {
			s, err := store.Open(context.Background(), db.DSN, nil)
			if err != nil {
				t.Error(err)
				close(held)
				return
			}
			defer s.Close()
			_ = s.InTx(context.Background(), func(store.Tx) error {
				close(held) // BEGIN IMMEDIATE took the write lock
				<-release
				return nil
			})
		})
		<-held
	}
	b.end = func() {
		close(release)
		wg.Wait()
	}
	return b
}

// Start cuts the stores off; it does nothing while they are.
func (b *Blip) Start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		b.start()
		b.on = true
	}
}

// End lets them through again; it does nothing while they are.
func (b *Blip) End() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on {
		b.end()
		b.on = false
	}
}
