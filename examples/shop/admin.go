package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
)

// bannerKey is the setting every page's banner shows: set on one instance, every
// instance's pages show it within milliseconds (the settings' bus signal), or a second.
const (
	bannerKey = "shop.banner"
	maxBanner = 200
)

// setBanner sets the banner, or removes it when the text is empty.
func (s *Shop) setBanner(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	text := strings.TrimSpace(r.PostFormValue("banner"))
	if utf8.RuneCountInString(text) > maxBanner || !utf8.ValidString(text) {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("Give a banner of at most %d characters.", maxBanner))
		return
	}
	opts := &settings.SetOpts{Actor: session.UserID(ctx)}
	var err error
	if text == "" {
		_, err = s.node.Settings().Delete(ctx, bannerKey, opts)
		if errors.Is(err, settings.ErrNotFound) {
			err = nil
		}
	} else {
		_, err = s.node.Settings().Set(ctx, bannerKey, text, opts)
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin?flash="+url.QueryEscape("Banner saved: every instance shows it now."), http.StatusSeeOther)
}

const (
	restockLock  = "shop-restock"
	restockLevel = 20 // units each product is topped up to
	sqlLowStock  = `SELECT id, stock FROM shop_products WHERE stock < $1 ORDER BY id`
	sqlRestock   = `UPDATE shop_products SET stock = stock + $2 WHERE id = $1`
	sqlDelivery  = `INSERT INTO shop_restocks (product_id, units, token, made_by) VALUES ($1, $2, $3, $4)`
)

// errRestocking is a restock refused because another one holds the lock.
var errRestocking = errors.New("shop: a restock is running")

// restock tops every product up to restockLevel units. It reads the stock and then orders
// each product's delivery in its own transaction (a supplier per product), so two restocks
// at once (two admins, two instances) would both see the same shortage and deliver it
// twice: the cluster-wide lock lets one run at a time, and each delivery checks, in its
// transaction, that this restock still holds the lock (its fencing token), so one that
// paused past the lock's TTL delivers nothing more.
func (s *Shop) restock(ctx context.Context) (units int64, token int64, err error) {
	lk, ok, err := s.node.Locks().TryAcquire(ctx, restockLock, nil)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, errRestocking
	}
	defer lk.Release(context.WithoutCancel(ctx))
	type low struct{ id, stock int64 }
	var lows []low
	rows, err := s.node.Store().Reader().Query(ctx, sqlLowStock, restockLevel)
	if err != nil {
		return 0, lk.Token(), err
	}
	for rows.Next() {
		var l low
		if err := rows.Scan(&l.id, &l.stock); err != nil {
			rows.Close()
			return 0, lk.Token(), err
		}
		lows = append(lows, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, lk.Token(), err
	}
	for _, l := range lows {
		n := restockLevel - l.stock
		err := s.node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := lk.Check(ctx, tx); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, sqlRestock, l.id, n); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, sqlDelivery, l.id, n, lk.Token(), s.slot+" "+s.node.ID()); err != nil {
				return err
			}
			return s.catalogue.InvalidateTx(ctx, tx, catalogueKey)
		})
		if err != nil {
			return units, lk.Token(), err
		}
		units += n
	}
	return units, lk.Token(), nil
}

func (s *Shop) restockPage(w http.ResponseWriter, r *http.Request) {
	units, token, err := s.restock(r.Context())
	if errors.Is(err, errRestocking) {
		s.fail(w, r, http.StatusConflict, "Another restock is running (on this or another instance); try again when it is done.")
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	msg := fmt.Sprintf("Restocked %d units under the restock lock (fencing token %d).", units, token)
	http.Redirect(w, r, "/admin?flash="+url.QueryEscape(msg), http.StatusSeeOther)
}
