package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// checkCart goes on with the cart, which one instance owns: four products added through
// the proxy, each with its form's Idempotency-Key (three requests in a row, which the
// proxy spreads over the three instances, so that some reach instances that forward them
// to the owner), one removed; the cart page, served by its owner, lists the rest; and the
// checkout turns it into orders, once. It returns how many of the adds were forwarded.
func (k *shopCheck) checkCart(ctx context.Context) (forwarded int, err error) {
	var products []string
	var formKeys map[string]string
	err = k.step(ctx, "read the catalogue's add-to-cart forms", func() error {
		products, formKeys, err = k.cartForms(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	if len(products) < 3 {
		return 0, fmt.Errorf("the catalogue has %d add-to-cart forms, want 3 or more", len(products))
	}
	owners := map[string]bool{}
	add := func(product, key string) error {
		return k.step(ctx, "add product "+product+" to the cart", func() error {
			_, h, err := k.post(ctx, "/cart/items", url.Values{"idempotency_key": {key}, "product": {product}}, http.StatusSeeOther)
			if err != nil {
				return err
			}
			owner := strings.Fields(h.Get("X-Cart-Owner"))
			if len(owner) == 0 {
				return errors.New("the answer does not name the cart's owner (X-Cart-Owner)")
			}
			owners[owner[0]] = true
			if by := h.Values("X-Served-By"); len(by) > 0 && !strings.HasPrefix(by[0], owner[0]+" ") {
				forwarded++ // reached another instance first
			}
			return nil
		})
	}
	a, b, c := products[0], products[1], products[2]
	for _, p := range []string{a, b, c} {
		if err := add(p, formKeys[p]); err != nil {
			return forwarded, err
		}
	}
	err = k.step(ctx, "read the catalogue's add-to-cart forms again", func() error {
		_, formKeys, err = k.cartForms(ctx)
		return err
	})
	if err != nil {
		return forwarded, err
	}
	if err := add(a, formKeys[a]); err != nil {
		return forwarded, err
	}
	k.say("added 4 units to the cart through the proxy, which spread the requests: %d reached an instance that forwarded it to the cart's owner (instance %s)",
		forwarded, strings.Join(keys(owners), ", "))

	err = k.step(ctx, "remove a product from the cart", func() error {
		_, _, err := k.post(ctx, "/cart/remove", url.Values{"product": {c}}, http.StatusSeeOther)
		return err
	})
	if err != nil {
		return forwarded, err
	}

	var owner, partition, checkout string
	err = k.step(ctx, "see the cart", func() error {
		body, err := k.get(ctx, "/cart")
		if err != nil {
			return err
		}
		for p, want := range map[string]string{a: "2", b: "1", c: "0"} {
			if got := cartQuantity(body, p); got != want {
				return fmt.Errorf("the cart holds %s of product %s, want %s", got, p, want)
			}
		}
		m := cartOwner.FindStringSubmatch(body)
		if m == nil {
			return errors.New("the cart page does not say which instance owns the cart")
		}
		owner, partition = m[1], m[2]
		if m = cartCheckout.FindStringSubmatch(body); m == nil {
			return errors.New("the cart page has no checkout form")
		}
		checkout = m[1]
		return nil
	})
	if err != nil {
		return forwarded, err
	}
	k.say("the cart holds 2 + 1 units, as added and removed, in the memory of instance %s, the owner of its partition %s", owner, partition)

	var before int
	err = k.step(ctx, "count the orders", func() error {
		before, err = k.orderCount(ctx)
		return err
	})
	if err != nil {
		return forwarded, err
	}
	var flash string
	err = k.step(ctx, "check out", func() error {
		loc, _, err := k.post(ctx, "/cart/checkout", url.Values{"idempotency_key": {checkout}}, http.StatusSeeOther)
		flash = loc
		return err
	})
	if err != nil {
		return forwarded, err
	}
	if !strings.HasPrefix(flash, "/orders?flash=") {
		return forwarded, fmt.Errorf("check out: the checkout sent us to %q, not to the orders", flash)
	}
	err = k.step(ctx, "see the cart empty and its orders", func() error {
		body, err := k.get(ctx, "/cart")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `id="cart-empty"`) {
			return errors.New("the cart is not empty after the checkout")
		}
		n, err := k.orderCount(ctx)
		if err == nil && n != before+2 {
			err = fmt.Errorf("%d orders after the checkout, %d before: want 2 more, one per product in the cart", n, before)
		}
		return err
	})
	if err != nil {
		return forwarded, err
	}
	k.say("checked out: the cart became 2 orders, once, and is empty")
	return forwarded, nil
}

var (
	cartForm     = regexp.MustCompile(`action="/cart/items" class="add-to-cart">\s*<input type="hidden" name="idempotency_key" value="([0-9a-f]+)">\s*<input type="hidden" name="product" value="(\d+)">`)
	cartOwner    = regexp.MustCompile(`id="cart-owner">instance (\S+)</strong>[^<]*<span id="cart-partition">(\d+)<`)
	cartCheckout = regexp.MustCompile(`action="/cart/checkout"[^>]*>\s*<input type="hidden" name="idempotency_key" value="([0-9a-f]+)">`)
	orderRow     = regexp.MustCompile(`<tr><td><a href="/orders/\d+">`)
)

// cartForms reads the catalogue's add-to-cart forms: the products in order, and each
// one's Idempotency-Key.
func (k *shopCheck) cartForms(ctx context.Context) ([]string, map[string]string, error) {
	body, err := k.get(ctx, "/catalogue")
	if err != nil {
		return nil, nil, err
	}
	var products []string
	keys := map[string]string{}
	for _, m := range cartForm.FindAllStringSubmatch(body, -1) {
		products = append(products, m[2])
		keys[m[2]] = m[1]
	}
	return products, keys, nil
}

// cartQuantity reads the quantity of product on the cart page: "0" without its line.
func cartQuantity(page, product string) string {
	m := regexp.MustCompile(`id="line-` + regexp.QuoteMeta(product) + `"><td>[^<]*</td><td class="quantity">(\d+)<`).FindStringSubmatch(page)
	if m == nil {
		return "0"
	}
	return m[1]
}

// orderCount counts the user's orders on the orders page.
func (k *shopCheck) orderCount(ctx context.Context) (int, error) {
	body, err := k.get(ctx, "/orders")
	return len(orderRow.FindAllString(body, -1)), err
}
