package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/forward"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

// The shopping cart is owned by one instance. Carts are partitioned by user over the
// partition set "carts", and the instance owning a user's partition keeps the user's cart
// in its memory: the forwarding middleware sends every cart request to that instance,
// wherever the load balancer sent it. Each change is written through to shop_carts in a
// transaction fenced by the partition's assignment (Assignment.Check), so an instance that
// lost the partition (paused past its lease) cannot write; a new owner (after a join, a
// graceful leave or a crash) loads the partition's carts from the table when it first
// needs them, so no cart is lost with its instance.
const (
	cartSet        = "carts"
	cartPartitions = 16
	maxInCart      = 99 // units of one product, as an order takes at most
)

const (
	sqlCartsOf  = `SELECT user_id, product_id, quantity FROM shop_carts WHERE part = $1`
	sqlCartLine = `INSERT INTO shop_carts (user_id, product_id, quantity, part) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity`
	sqlCartDrop  = `DELETE FROM shop_carts WHERE user_id = $1 AND product_id = $2`
	sqlCartEmpty = `DELETE FROM shop_carts WHERE user_id = $1`
)

// errNotOwner: this instance does not own the cart's partition (any more), as when the
// partition moved while the request was forwarded here. The client tries again.
var errNotOwner = errors.New("shop: this instance does not own the cart's partition")

// cart is a user's cart: quantities by product id.
type cart map[int64]int64

// carts holds the carts of the partitions this instance owns.
type carts struct {
	st  *store.Store
	log *slog.Logger
	set *partition.Set

	mu     sync.Mutex     // protects shards
	shards map[int]*shard // by partition
}

// shard is the carts of one partition, under one assignment of it to this instance.
type shard struct {
	a *partition.Assignment

	mu    sync.Mutex      // protects carts; held across a change's transaction, so a partition's carts change one at a time
	carts map[string]cart // by user; nil until loaded from the table
}

// joinCarts joins the partition set of the carts.
func joinCarts(ctx context.Context, node *twice.Node) (*carts, error) {
	c := &carts{st: node.Store(), log: node.Logger(), shards: map[int]*shard{}}
	set, err := node.Partitions().Join(ctx, partition.Config{Name: cartSet, Partitions: cartPartitions, OnRevoked: c.revoked})
	if err != nil {
		return nil, fmt.Errorf("shop: joining the carts' partitions: %w", err)
	}
	c.set = set
	return c, nil
}

// revoked forgets a partition's carts as it leaves this instance, after the change in
// flight, if any, has committed; its next owner loads them from the table.
func (c *carts) revoked(_ context.Context, a *partition.Assignment) {
	c.mu.Lock()
	sh := c.shards[a.Partition()]
	if sh != nil && sh.a == a {
		delete(c.shards, a.Partition())
	}
	c.mu.Unlock()
	if sh != nil {
		sh.mu.Lock()
		sh.carts = nil
		sh.mu.Unlock()
	}
}

// open runs fn on the shard of user's partition, locked and loaded, if this instance owns
// the partition; errNotOwner otherwise. When fn fails, the shard's carts are read from the
// table again next time: a failed write may or may not have committed.
func (c *carts) open(ctx context.Context, user string, fn func(sh *shard) error) error {
	p := c.set.Of(user)
	a := c.set.Assignment(p)
	if a == nil {
		return errNotOwner
	}
	c.mu.Lock()
	sh := c.shards[p]
	if sh == nil || sh.a != a { // first use of this assignment (a partition that came back starts afresh)
		sh = &shard{a: a}
		c.shards[p] = sh
	}
	c.mu.Unlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !a.Valid() {
		return errNotOwner
	}
	if sh.carts == nil {
		if err := c.load(ctx, sh); err != nil {
			return err
		}
	}
	if err := fn(sh); err != nil {
		sh.carts = nil
		return err
	}
	return nil
}

// load reads the shard's carts from the table: from the primary, not Reader, since a
// replica may not have the previous owner's last change yet.
func (c *carts) load(ctx context.Context, sh *shard) error {
	rows, err := c.st.Query(ctx, sqlCartsOf, sh.a.Partition())
	if err != nil {
		return fmt.Errorf("shop: loading the carts of partition %d: %w", sh.a.Partition(), err)
	}
	defer rows.Close()
	carts := map[string]cart{}
	for rows.Next() {
		var user string
		var product, qty int64
		if err := rows.Scan(&user, &product, &qty); err != nil {
			return err
		}
		if carts[user] == nil {
			carts[user] = cart{}
		}
		carts[user][product] = qty
	}
	if err := rows.Err(); err != nil {
		return err
	}
	sh.carts = carts
	c.log.Info("shop: read the carts of a partition this instance owns from the table", "partition", sh.a.Partition(),
		"epoch", sh.a.Token(), "carts", len(carts))
	return nil
}

// set writes user's quantity of product (0 removes it from the cart) in tx, fenced: tx
// fails with partition.ErrFenced if the partition has passed to another instance.
func (sh *shard) set(ctx context.Context, tx store.Tx, user string, product, qty int64) error {
	if err := sh.a.Check(ctx, tx); err != nil {
		return err
	}
	var err error
	if qty == 0 {
		_, err = tx.Exec(ctx, sqlCartDrop, user, product)
	} else {
		_, err = tx.Exec(ctx, sqlCartLine, user, product, qty, sh.a.Partition())
	}
	return err
}

// empty empties user's cart in tx, fenced as set is.
func (sh *shard) empty(ctx context.Context, tx store.Tx, user string) error {
	if err := sh.a.Check(ctx, tx); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, sqlCartEmpty, user)
	return err
}

// put changes user's quantity of product in memory, after its write committed.
func (sh *shard) put(user string, product, qty int64) {
	c := sh.carts[user]
	if c == nil {
		c = cart{}
		sh.carts[user] = c
	}
	if qty == 0 {
		delete(c, product)
	} else {
		c[product] = qty
	}
}

// cartForwarder sends each cart request to the instance owning the cart. Its key is the
// session's user, which only the session knows, so it runs inside the session middleware
// (not outermost, as the forward package suggests): the instance the request reached reads
// the session to learn the user, and the owner reads it again when it serves the request.
func (s *Shop) cartForwarder() (*forward.Forwarder, error) {
	fwd, err := s.node.Forwarder(forward.Config{
		Key: func(r *http.Request) (string, bool) {
			user := session.UserID(r.Context())
			return user, user != ""
		},
		Locate: twice.LocateIn(s.carts.set),
	})
	if err != nil {
		return nil, fmt.Errorf("shop: the carts' forwarder: %w", err)
	}
	return fwd, nil
}

// cartLine is a line of the cart page.
type cartLine struct {
	Product  product
	Quantity int64
}

// cartView is the cart page's data: the lines, and who owns the cart.
type cartView struct {
	Lines      []cartLine
	Total      int64 // cents, at today's prices
	Partition  int
	Partitions int
	Epoch      int64  // the assignment's fencing token
	Owned      []int  // the partitions this instance owns
	Received   string // the instance that forwarded the request here, "" when it came here directly
	Key        string // the checkout form's Idempotency-Key
}

// cartPage shows the user's cart, from the memory of the instance owning it, and which
// instance that is.
func (s *Shop) cartPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := session.UserID(ctx)
	var mine cart
	v := cartView{Partitions: cartPartitions, Owned: s.carts.set.Mine(), Key: newKey()}
	err := s.carts.open(ctx, user, func(sh *shard) error {
		mine = maps.Clone(sh.carts[user])
		v.Partition, v.Epoch = sh.a.Partition(), sh.a.Token()
		return nil
	})
	if err != nil {
		s.cartFailed(w, r, err)
		return
	}
	c, err := s.catalogue.Get(ctx, catalogueKey)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	for _, p := range c.Products { // in the catalogue's order
		if q := mine[p.ID]; q > 0 {
			v.Lines = append(v.Lines, cartLine{Product: p, Quantity: q})
			v.Total += q * p.Price
		}
	}
	v.Received, _ = forward.ForwardedBy(ctx)
	s.render(w, r, http.StatusOK, "cart", "Your cart", v)
}

// addToCart adds a unit of a product to the user's cart, once per Idempotency-Key: a
// retry after a lost answer (its instance killed after the commit) adds nothing more.
func (s *Shop) addToCart(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, key, ok := s.keyed(w, r)
	if !ok {
		return
	}
	productID, ok := s.formProduct(w, r)
	if !ok {
		return
	}
	fp := sha256.Sum256(fmt.Appendf(nil, "cart\n%d", productID))
	err := s.carts.open(ctx, user, func(sh *shard) error {
		qty := sh.carts[user][productID] + 1
		res, err := s.node.Idempotency().Do(ctx, idempotency.Params{Scope: user, Key: key, Fingerprint: fp[:]},
			func(ctx context.Context, tx store.Tx) (*idempotency.Response, error) {
				if qty > maxInCart {
					return nil, errCartFull
				}
				var price int64
				if err := tx.QueryRow(ctx, sqlPrice, productID).Scan(&price); errors.Is(err, store.ErrNoRows) {
					return nil, errNoProduct
				} else if err != nil {
					return nil, err
				}
				if err := sh.set(ctx, tx, user, productID, qty); err != nil {
					return nil, err
				}
				return seeOther("/cart"), nil
			})
		if err == nil && !res.Replayed {
			sh.put(user, productID, qty)
		}
		return err
	})
	if err != nil {
		s.cartFailed(w, r, err)
		return
	}
	http.Redirect(w, r, "/cart", http.StatusSeeOther)
}

// removeFromCart takes a product out of the user's cart. Sent twice, it is out all the
// same: no key needed.
func (s *Shop) removeFromCart(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := session.UserID(ctx)
	productID, ok := s.formProduct(w, r)
	if !ok {
		return
	}
	err := s.carts.open(ctx, user, func(sh *shard) error {
		if sh.carts[user][productID] == 0 {
			return nil
		}
		if err := s.node.Store().InTx(ctx, func(tx store.Tx) error { return sh.set(ctx, tx, user, productID, 0) }); err != nil {
			return err
		}
		sh.put(user, productID, 0)
		return nil
	})
	if err != nil {
		s.cartFailed(w, r, err)
		return
	}
	http.Redirect(w, r, "/cart", http.StatusSeeOther)
}

// checkout turns the user's cart into orders, one per product, each as the catalogue's
// order form places it (its confirmation job, event and fulfilment workflow in the same
// transaction), and empties the cart: all in one transaction, fenced by the partition's
// assignment and run once per Idempotency-Key.
func (s *Shop) checkout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, key, ok := s.keyed(w, r)
	if !ok {
		return
	}
	var res *idempotency.Response
	err := s.carts.open(ctx, user, func(sh *shard) error {
		mine := sh.carts[user]
		var err error
		res, err = s.node.Idempotency().Do(ctx, idempotency.Params{Scope: user, Key: key, Fingerprint: []byte("checkout")},
			func(ctx context.Context, tx store.Tx) (*idempotency.Response, error) {
				// Checked here, after the key: a retry of a checkout that went through
				// finds the cart empty, and gets the stored response instead.
				if len(mine) == 0 {
					return nil, errCartEmpty
				}
				if err := sh.empty(ctx, tx, user); err != nil {
					return nil, err
				}
				for _, id := range slices.Sorted(maps.Keys(mine)) {
					if _, err := s.insertOrder(ctx, tx, user, id, mine[id], "from the cart"); err != nil {
						return nil, err
					}
				}
				flash := fmt.Sprintf("Checked out: your cart became %d orders.", len(mine))
				if len(mine) == 1 {
					flash = "Checked out: your cart became an order."
				}
				return seeOther("/orders?flash=" + url.QueryEscape(flash)), nil
			})
		if err == nil && !res.Replayed {
			delete(sh.carts, user)
		}
		return err
	})
	if err != nil {
		s.cartFailed(w, r, err)
		return
	}
	http.Redirect(w, r, res.Header.Get("Location"), res.Status)
}

// formProduct reads the form's product id; without one it answers the request itself.
func (s *Shop) formProduct(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, ok := formInt(r, "product", 1<<31)
	if !ok {
		s.fail(w, r, http.StatusBadRequest, "Choose a product.")
	}
	return id, ok
}

var (
	errCartFull  = fmt.Errorf("shop: at most %d units of a product fit in a cart", maxInCart)
	errCartEmpty = errors.New("shop: the cart is empty")
)

func seeOther(location string) *idempotency.Response {
	h := http.Header{}
	h.Set("Location", location)
	return &idempotency.Response{Status: http.StatusSeeOther, Header: h}
}

// cartFailed answers a cart request that failed.
func (s *Shop) cartFailed(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Del(cartOwnerHeader)
	switch {
	case errors.Is(err, errNotOwner), errors.Is(err, partition.ErrFenced):
		// The partition moved while the request was on its way: its new owner serves
		// the retry.
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, http.StatusServiceUnavailable, "Your cart is moving to another instance; try again in a second.")
	case errors.Is(err, errNoProduct):
		s.fail(w, r, http.StatusNotFound, "There is no such product.")
	case errors.Is(err, errCartFull):
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("At most %d of a product fit in the cart.", maxInCart))
	case errors.Is(err, errCartEmpty):
		s.fail(w, r, http.StatusBadRequest, "Your cart is empty.")
	case errors.Is(err, idempotency.ErrKeyReused):
		s.fail(w, r, http.StatusUnprocessableEntity, "This form was already used: reload the page.")
	case errors.Is(err, idempotency.ErrInProgress):
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, http.StatusConflict, "This is being done right now; try again in a second.")
	default:
		s.failErr(w, r, err)
	}
}

// cartOwnerHeader names, on each answer of a cart's owner, the instance owning the cart
// (for tools: twice demo's check).
const cartOwnerHeader = "X-Cart-Owner"

// atOwner serves a cart request on the cart's owner.
func (s *Shop) atOwner(h http.HandlerFunc) http.HandlerFunc {
	return s.cartFwd.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(cartOwnerHeader, s.slot+" "+s.node.ID())
		h(w, r)
	})).ServeHTTP
}
