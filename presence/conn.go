package presence

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// Conn is one connection of a user held by this instance (a WebSocket, a stream): its
// entry in the service's presence, and the rooms it is in. Close it when the connection
// ends. Its methods are safe for concurrent use; they apply one at a time.
type Conn struct {
	p    *Presence
	id   string
	user string

	mu     sync.Mutex // protects rooms, closed; held across each change, so changes apply in order
	rooms  map[string]bool
	closed bool
}

// Connect records a connection of user held by this instance, in rooms (none is fine: the
// user is then online in the service, room ""). Every instance sees it in its view within
// the bus's delay; this one as soon as its next look, or at once after [Presence.Refresh].
func (p *Presence) Connect(ctx context.Context, user string, rooms ...string) (*Conn, error) {
	if err := CheckUser(user); err != nil {
		return nil, err
	}
	if err := checkRooms(rooms); err != nil {
		return nil, err
	}
	if p.d.Members == nil {
		// Entries are read only while their instance is a live member: one that is not
		// would be written and never seen.
		return nil, errors.New("presence: Connect needs Deps.Members: a connection counts only while the instance holding it is alive in the cluster")
	}
	if p.closed() {
		return nil, ErrClosed
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	c := &Conn{p: p, id: base64.RawURLEncoding.EncodeToString(b), user: user, rooms: map[string]bool{}}
	for _, r := range rooms {
		c.rooms[r] = true
	}
	p.used.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := p.add(ctx, c.insert(ctx)); err != nil {
		return nil, fmt.Errorf("presence: connect: %w", err)
	}
	p.mu.Lock()
	p.conns[c.id] = c
	p.mu.Unlock()
	return c, nil
}

// insert writes the connection's entry and its rooms, unless they are there already.
// c.mu is held.
func (c *Conn) insert(ctx context.Context) func(tx store.Tx) (int64, error) {
	return func(tx store.Tx) (int64, error) { return c.insertTx(ctx, tx) }
}

func (c *Conn) insertTx(ctx context.Context, tx store.Tx) (int64, error) {
	p := c.p
	n, err := tx.Exec(ctx, p.q.connect, p.st.NowArg(), p.d.Service, c.id, c.user, p.d.Instance, p.incarnation)
	if err != nil {
		return 0, err
	}
	for _, r := range slices.Sorted(maps.Keys(c.rooms)) {
		k, err := tx.Exec(ctx, p.q.join, p.st.NowArg(), p.d.Service, c.id, r)
		if err != nil {
			return 0, err
		}
		n += k
	}
	return n, nil
}

// ID is the connection's id, unique in the service.
func (c *Conn) ID() string { return c.id }

// User is who is connected.
func (c *Conn) User() string { return c.user }

// Rooms are the rooms the connection is in, sorted.
func (c *Conn) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.rooms))
}

// checkRooms checks every room name.
func checkRooms(rooms []string) error {
	for _, r := range rooms {
		if err := CheckRoom(r); err != nil {
			return err
		}
	}
	return nil
}

// Join puts the connection in rooms; joining a room it is in already does nothing. It
// returns [ErrGone] if the connection's entry is gone: closed, or deleted while this
// instance was counted dead.
func (c *Conn) Join(ctx context.Context, rooms ...string) error {
	if err := checkRooms(rooms); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrGone
	}
	if c.p.closed() {
		return ErrClosed
	}
	p, gone := c.p, false
	err := p.add(ctx, func(tx store.Tx) (int64, error) {
		var n int64
		for _, r := range rooms {
			k, err := tx.Exec(ctx, p.q.join, p.st.NowArg(), p.d.Service, c.id, r)
			if err != nil {
				return 0, err
			}
			n += k
		}
		if n == 0 {
			var have int64
			if err := tx.QueryRow(ctx, p.q.exists, p.d.Service, c.id).Scan(&have); err != nil {
				return 0, err
			}
			gone = have == 0
		}
		return n, nil
	})
	switch {
	case err != nil:
		return fmt.Errorf("presence: join: %w", err)
	case gone:
		return ErrGone
	}
	for _, r := range rooms {
		c.rooms[r] = true
	}
	return nil
}

// Leave takes the connection out of rooms; leaving a room it is not in does nothing.
func (c *Conn) Leave(ctx context.Context, rooms ...string) error {
	if err := checkRooms(rooms); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.p.closed() {
		return ErrClosed
	}
	p := c.p
	err := p.write(ctx, func(tx store.Tx) (int64, error) {
		var n int64
		for _, r := range rooms {
			k, err := tx.Exec(ctx, p.q.leave, p.d.Service, c.id, r)
			if err != nil {
				return 0, err
			}
			n += k
		}
		return n, nil
	})
	if err != nil {
		return fmt.Errorf("presence: leave: %w", err)
	}
	for _, r := range rooms {
		delete(c.rooms, r)
	}
	return nil
}

// Close deletes the connection's entry: the user leaves its rooms on every instance unless
// another connection of theirs is in them. Closing twice does nothing.
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	p := c.p
	if p.closed() {
		return ErrClosed
	}
	if err := p.write(ctx, func(tx store.Tx) (int64, error) {
		return tx.Exec(ctx, p.q.disconnect, p.d.Service, c.id)
	}); err != nil {
		return fmt.Errorf("presence: disconnect: %w", err)
	}
	c.closed = true
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
	return nil
}

// restore puts back the entries of conns, unless they are closed or there already.
func (p *Presence) restore(conns []*Conn) {
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
		c.mu.Lock()
		var err error
		if !c.closed {
			err = p.add(ctx, c.insert(ctx))
		}
		c.mu.Unlock()
		cancel()
		switch {
		case errors.Is(err, ErrClosed):
			return
		case err != nil:
			p.log.Warn("presence: cannot put back the entry of a connection this instance holds; the next look tries again", "conn", c.id, "err", err)
		}
	}
}
