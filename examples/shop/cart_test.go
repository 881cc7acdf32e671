package main

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/twicetest"
)

var (
	cartForm    = regexp.MustCompile(`action="/cart/items" class="add-to-cart">\s*<input type="hidden" name="idempotency_key" value="([0-9a-f]+)">\s*<input type="hidden" name="product" value="(\d+)">`)
	checkoutKey = regexp.MustCompile(`action="/cart/checkout" class="card inline">\s*<input type="hidden" name="idempotency_key" value="([0-9a-f]+)">`)
)

// addToCart adds a unit of product to the cart through instance i, with the key of the
// catalogue's form, and sends it again with the same key; it returns the first answer.
func (c *client) addToCart(i int, product string) answer {
	c.t.Helper()
	cat := c.get(i, "/catalogue").want(c.t, http.StatusOK)
	for _, m := range cartForm.FindAllStringSubmatch(cat.body, -1) {
		if m[2] == product {
			form := url.Values{"idempotency_key": {m[1]}, "product": {product}}
			a := c.post(i, "/cart/items", form).want(c.t, http.StatusSeeOther)
			c.post(i, "/cart/items", form).want(c.t, http.StatusSeeOther) // a retry: added once
			return a
		}
	}
	c.t.Fatalf("the catalogue has no add-to-cart form for product %s:\n%s", product, cat.body)
	return answer{}
}

// quantityIn returns the quantity of product on the cart page, 0 if it has no line.
func quantityIn(page, product string) string {
	m := regexp.MustCompile(`id="line-` + product + `"><td>[^<]*</td><td class="quantity">(\d+)<`).FindStringSubmatch(page)
	if m == nil {
		return "0"
	}
	return m[1]
}

// The cart lives on the instance owning its user's partition. Added to through either
// instance (the other forwards the request, signed), it is served by its owner and shows
// it. When the owner crashes, the other instance takes the partition over and loads the
// cart from the table, as it was; and its checkout turns it into orders, once per key.
func TestShopCartOwnedByOneInstance(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		nodes, shops, c := openShops(t, db)
		c.post(0, "/login", url.Values{"name": {"ann"}}).want(t, http.StatusSeeOther)

		// The two instances split the partitions, and agree on who owns ann's cart.
		owner := -1
		testnode.Eventually(t, 20*time.Second, "the carts' partitions split between the instances", func() bool {
			o0, err0 := shops[0].carts.set.Owner("ann")
			o1, err1 := shops[1].carts.set.Owner("ann")
			if err0 != nil || err1 != nil || o0.Instance != o1.Instance ||
				len(shops[0].carts.set.Mine()) != cartPartitions/2 || len(shops[1].carts.set.Mine()) != cartPartitions/2 {
				return false
			}
			owner = 0
			if o0.Instance == nodes[1].ID() {
				owner = 1
			}
			return true
		})
		other := 1 - owner
		ownerName := c.srv[owner].URL // for messages
		wantOwner := string(rune('1'+owner)) + " " + nodes[owner].ID()

		// Added to through the owner, and through the other instance, which forwards.
		if a := c.addToCart(owner, "1"); a.header.Get(cartOwnerHeader) != wantOwner {
			t.Fatalf("added at the owner %s, served by %q", ownerName, a.header.Get(cartOwnerHeader))
		}
		a := c.addToCart(other, "2")
		if got := a.header.Get(cartOwnerHeader); got != wantOwner {
			t.Fatalf("added through the other instance, served by %q, want the owner %q", got, wantOwner)
		}
		if by := a.header.Values("X-Served-By"); len(by) != 2 || !strings.HasPrefix(by[0], string(rune('1'+other))+" ") {
			t.Fatalf("a forwarded request's X-Served-By: %q, want the instance it reached, then the owner", by)
		}
		c.addToCart(other, "1")
		c.addToCart(owner, "3")
		c.post(other, "/cart/remove", url.Values{"product": {"3"}}).want(t, http.StatusSeeOther)
		c.post(other, "/cart/remove", url.Values{"product": {"3"}}).want(t, http.StatusSeeOther) // already out
		page := c.get(other, "/cart").want(t, http.StatusOK, `id="cart-owner">instance `+string(rune('1'+owner))+`<`,
			`id="cart-received">`+nodes[other].ID()+`<`, `id="cart-total">€107.00<`).body
		if q1, q2, q3 := quantityIn(page, "1"), quantityIn(page, "2"), quantityIn(page, "3"); q1 != "2" || q2 != "1" || q3 != "0" {
			t.Fatalf("the cart holds %s, %s and %s of products 1, 2 and 3; want 2, 1 and 0:\n%s", q1, q2, q3, page)
		}
		c.get(owner, "/cart").want(t, http.StatusOK, `id="cart-direct"`)

		// The owner crashes: the other instance takes its partitions over and loads the
		// cart from the table.
		twicetest.Crash(t, nodes[owner])
		c.srv[owner].Close()
		testnode.Eventually(t, 20*time.Second, "the cart on the surviving instance", func() bool {
			a := c.get(other, "/cart")
			return a.status == http.StatusOK && strings.Contains(a.body, `id="cart-owner">instance `+string(rune('1'+other))+`<`)
		})
		page = c.get(other, "/cart").want(t, http.StatusOK, `id="cart-direct"`).body
		if q1, q2 := quantityIn(page, "1"), quantityIn(page, "2"); q1 != "2" || q2 != "1" {
			t.Fatalf("after the owner's crash the cart holds %s and %s of products 1 and 2, want 2 and 1:\n%s", q1, q2, page)
		}

		// Checked out: two orders and an empty cart; the same key again changes nothing.
		m := checkoutKey.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("the cart has no checkout form:\n%s", page)
		}
		done := c.post(other, "/cart/checkout", url.Values{"idempotency_key": {m[1]}}).want(t, http.StatusSeeOther)
		loc := done.header.Get("Location")
		if !strings.HasPrefix(loc, "/orders?flash=") || !strings.Contains(loc, "2+orders") {
			t.Fatalf("the checkout sent us to %q", loc)
		}
		again := c.post(other, "/cart/checkout", url.Values{"idempotency_key": {m[1]}}).want(t, http.StatusSeeOther)
		if again.header.Get("Location") != loc {
			t.Fatalf("the checkout again sent us to %q, want %q", again.header.Get("Location"), loc)
		}
		c.post(other, "/cart/checkout", url.Values{"idempotency_key": {"another-key"}}).want(t, http.StatusBadRequest, "Your cart is empty")
		c.get(other, "/cart").want(t, http.StatusOK, `id="cart-empty"`)
		orders := c.get(other, "/orders").want(t, http.StatusOK).body
		if n := strings.Count(orders, "<tr><td><a href="); n != 2 {
			t.Fatalf("%d orders after the checkout, want 2:\n%s", n, orders)
		}
	})
}
