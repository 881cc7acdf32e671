package store

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"
)

// maxCachedStmts bounds each SQLite connection pool's statement cache. twice's own hot
// statements number a few dozen; past the bound, further texts (a caller's ad-hoc SQL, say)
// run unprepared as before, so the cache cannot grow without end.
const maxCachedStmts = 256

// stmtCache keeps prepared statements of one SQLite *sql.DB by their text. Without it the
// driver compiles every statement on every call: parsing was 40% of a job worker's CPU.
//
// A statement is prepared in the background, not by the caller that first misses it: the
// writer pool has one connection, and a caller inside a transaction holds it, so preparing
// on the pool there would wait for itself. Until the statement is ready, callers run the
// text unprepared. Inside a transaction a cached statement is bound to it with
// Tx.StmtContext, which reuses what was prepared on the connection.
type stmtCache struct {
	db   *sql.DB
	want chan string // texts to prepare; closed by close, under mu

	mu      sync.RWMutex // protects stmts, pending, closed and sends on want
	stmts   map[string]*sql.Stmt
	pending map[string]bool // asked for, not yet prepared
	closed  bool

	done chan struct{}
}

func newStmtCache(db *sql.DB) *stmtCache {
	c := &stmtCache{db: db, want: make(chan string, 64), stmts: map[string]*sql.Stmt{},
		pending: map[string]bool{}, done: make(chan struct{})}
	go c.prepareLoop()
	return c
}

// get returns the prepared statement for query, or nil if it is not ready (it is then asked
// for) or never will be (a script of several statements, or the cache is full).
func (c *stmtCache) get(query string) *sql.Stmt {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	st, ok := c.stmts[query]
	wanted := c.pending[query]
	full := len(c.stmts)+len(c.pending) >= maxCachedStmts
	c.mu.RUnlock()
	if ok || wanted || full || strings.Contains(strings.TrimRight(strings.TrimSpace(query), ";"), ";") {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.pending[query] {
		return nil
	}
	if st := c.stmts[query]; st != nil {
		return st
	}
	select {
	case c.want <- query:
		c.pending[query] = true
	default: // the preparer is behind: a later miss asks again
	}
	return nil
}

// prepareTimeout bounds preparing one statement in the background. It is longer than
// loop.StatementTimeout because nobody waits for it: meanwhile a caller's miss runs the
// text unprepared.
const prepareTimeout = time.Minute

// prepareLoop prepares the texts asked for until close. A text that fails to prepare (a
// syntax error, a table that does not exist yet) is forgotten: the next miss asks again,
// and meanwhile the caller's own run of the text reports the error.
func (c *stmtCache) prepareLoop() {
	defer close(c.done)
	for query := range c.want {
		ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
		st, err := c.db.PrepareContext(ctx, query)
		cancel()
		c.mu.Lock()
		delete(c.pending, query)
		switch {
		case err != nil:
		case c.closed:
			st.Close()
		default:
			c.stmts[query] = st
		}
		c.mu.Unlock()
	}
}

// close stops the background preparation and closes every statement. Call it before
// closing the pool (which ends a preparation still waiting for a connection), and wait
// afterwards.
func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, st := range c.stmts {
		st.Close()
	}
	c.stmts = map[string]*sql.Stmt{}
	close(c.want)
}

// wait returns once the background preparation has ended.
func (c *stmtCache) wait() {
	if c != nil {
		<-c.done
	}
}
