package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/occ"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

func (s *Shop) home(w http.ResponseWriter, r *http.Request) {
	if session.UserID(r.Context()) == "" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/catalogue", http.StatusSeeOther)
}

func (s *Shop) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login", "Log in", nil)
}

// maxName bounds a user's name, in characters.
const maxName = 40

// login signs the visitor in under the name they give: a demo has no passwords. SetUser
// renews the session's token, on every instance at once.
func (s *Shop) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" || utf8.RuneCountInString(name) > maxName || !utf8.ValidString(name) {
		s.render(w, r, http.StatusBadRequest, "login", "Log in", fmt.Sprintf("Give a name of 1 to %d characters.", maxName))
		return
	}
	if err := session.SetUser(r.Context(), name); err != nil {
		s.failErr(w, r, err)
		return
	}
	http.Redirect(w, r, "/catalogue", http.StatusSeeOther)
}

func (s *Shop) logout(w http.ResponseWriter, r *http.Request) {
	if err := session.Destroy(r.Context()); err != nil {
		s.failErr(w, r, err)
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// catalogueView is the catalogue page's data: each product with a fresh Idempotency-Key
// for its order form, and another for its add-to-cart form.
type catalogueView struct {
	Catalogue catalogue
	Keys      map[int64]string
	CartKeys  map[int64]string
}

func (s *Shop) cataloguePage(w http.ResponseWriter, r *http.Request) {
	c, err := s.catalogue.Get(r.Context(), catalogueKey)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	v := catalogueView{Catalogue: c, Keys: map[int64]string{}, CartKeys: map[int64]string{}}
	for _, p := range c.Products {
		v.Keys[p.ID], v.CartKeys[p.ID] = newKey(), newKey()
	}
	s.render(w, r, http.StatusOK, "catalogue", "Catalogue", v)
}

// requestKey is the request's Idempotency-Key: the header when a client sends one, else
// the form's field, which the page generated when it rendered the form.
func requestKey(r *http.Request) (string, error) {
	if lines := r.Header.Values("Idempotency-Key"); len(lines) > 0 {
		return idempotency.ParseKey(lines)
	}
	k := r.PostFormValue("idempotency_key")
	if k == "" || len(k) > idempotency.MaxKeyLen {
		return "", errors.New("the form carries no valid idempotency key: reload the catalogue")
	}
	return k, nil
}

// keyed reads the user of a form's request and its Idempotency-Key; without a key it
// answers the request itself.
func (s *Shop) keyed(w http.ResponseWriter, r *http.Request) (user, key string, ok bool) {
	key, err := requestKey(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return "", "", false
	}
	return session.UserID(r.Context()), key, true
}

// formInt reads a positive integer field of at most max.
func formInt(r *http.Request, field string, max int64) (int64, bool) {
	n, err := strconv.ParseInt(r.PostFormValue(field), 10, 64)
	return n, err == nil && n > 0 && n <= max
}

// placeOrder places an order once per Idempotency-Key: the key's claim, the order, its
// confirmation job and the stored response commit in one transaction, so a double click,
// a browser's retry or a retry after the instance was killed finds the order already
// placed and is sent to it.
func (s *Shop) placeOrder(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, key, ok := s.keyed(w, r)
	if !ok {
		return
	}
	productID, ok1 := formInt(r, "product", 1<<31)
	qty, ok2 := formInt(r, "quantity", 99)
	if !ok1 || !ok2 {
		s.fail(w, r, http.StatusBadRequest, "Choose a product and a quantity from 1 to 99.")
		return
	}
	note := strings.TrimSpace(r.PostFormValue("note"))
	fp := sha256.Sum256(fmt.Appendf(nil, "order\n%d\n%d\n%s", productID, qty, note))
	res, err := s.node.Idempotency().Do(ctx, idempotency.Params{Scope: user, Key: key, Fingerprint: fp[:]},
		func(ctx context.Context, tx store.Tx) (*idempotency.Response, error) {
			id, err := s.insertOrder(ctx, tx, user, productID, qty, note)
			if err != nil {
				return nil, err
			}
			h := http.Header{}
			h.Set("Location", "/orders/"+strconv.FormatInt(id, 10))
			return &idempotency.Response{Status: http.StatusSeeOther, Header: h}, nil
		})
	switch {
	case errors.Is(err, errNoProduct):
		s.fail(w, r, http.StatusNotFound, "There is no such product.")
		return
	case errors.Is(err, idempotency.ErrKeyReused):
		s.fail(w, r, http.StatusUnprocessableEntity, "This form was already used for another order: reload the catalogue.")
		return
	case errors.Is(err, idempotency.ErrInProgress):
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, http.StatusConflict, "This order is being placed right now; try again in a second.")
		return
	case err != nil:
		s.failErr(w, r, err)
		return
	}
	loc := res.Header.Get("Location")
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		loc += "?flash=" + url.QueryEscape("You sent this order before: here it is, placed once.")
	}
	http.Redirect(w, r, loc, res.Status)
}

var errNoProduct = errors.New("shop: no such product")

// insertOrder writes the order at the product's current price and, in the same
// transaction, enqueues its confirmation, publishes its order.placed event and starts its
// fulfilment workflow: each exists if and only if the order does.
func (s *Shop) insertOrder(ctx context.Context, tx store.Tx, user string, productID, qty int64, note string) (int64, error) {
	var price int64
	if err := tx.QueryRow(ctx, sqlPrice, productID).Scan(&price); errors.Is(err, store.ErrNoRows) {
		return 0, errNoProduct
	} else if err != nil {
		return 0, err
	}
	var id int64
	err := tx.QueryRow(ctx, sqlPlaceOrder, user, productID, qty, price, note, s.slot+" "+s.node.ID()).Scan(&id)
	if err != nil {
		return 0, err
	}
	if _, err := s.node.Jobs().EnqueueTx(ctx, tx, confirmOrder{OrderID: id}, nil); err != nil {
		return 0, err
	}
	if err := s.publishOrderPlaced(ctx, tx, orderPlaced{OrderID: id, ProductID: productID, Quantity: qty}); err != nil {
		return 0, err
	}
	f := fulfilment{OrderID: id, ProductID: productID, Quantity: qty, Cents: price, Note: note}
	if _, err := s.fulfil.StartTx(ctx, tx, fulfilmentID(id), f); err != nil {
		return 0, err
	}
	return id, nil
}

func (s *Shop) ordersPage(w http.ResponseWriter, r *http.Request) {
	orders, err := s.readOrders(r.Context(), session.UserID(r.Context()))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "orders", "Your orders", orders)
}

// pathID reads the id in the path.
func pathID(r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	return id, err == nil && id > 0
}

// orderView is the order page's data: the order and its fulfilment workflow's state.
type orderView struct {
	order
	Fulfilment *workflow.Status
}

// orderPage shows an order, whether its confirmation job ran and where, where its
// fulfilment workflow is, and a form that edits it with the version it shows as If-Match.
// Its ETag is the order's version.
func (s *Shop) orderPage(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r)
	if !ok {
		s.fail(w, r, http.StatusNotFound, "There is no such order.")
		return
	}
	o, err := s.readOrder(r.Context(), s.node.Store().Reader(), session.UserID(r.Context()), id)
	if errors.Is(err, store.ErrNoRows) {
		s.fail(w, r, http.StatusNotFound, "There is no such order.")
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	flow, err := s.node.Workflows().Get(r.Context(), fulfilmentID(o.ID))
	if errors.Is(err, workflow.ErrNotFound) {
		flow, err = nil, nil // placed before the shop had fulfilment
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	occ.SetETag(w, o.Version)
	s.render(w, r, http.StatusOK, "order", fmt.Sprintf("Order %d", o.ID), orderView{o, flow})
}

// ifMatch is the version the client says it is changing: the If-Match header of an API
// client, or the form's field, which the order page filled with the version it showed.
func ifMatch(r *http.Request) (int64, error) {
	lines := r.Header.Values("If-Match")
	if len(lines) == 0 {
		v, err := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
		if err != nil || v < 1 {
			return 0, errors.New("say which version you are changing: If-Match, or the form's version")
		}
		return v, nil
	}
	c, _, err := occ.ParseIfMatch(lines)
	if err != nil {
		return 0, err
	}
	for _, t := range c.Tags {
		if v, err := strconv.ParseInt(t.Opaque, 10, 64); err == nil && !t.Weak && v > 0 {
			return v, nil
		}
	}
	return 0, errors.New("If-Match names no version: send the ETag of the page you read")
}

// target reads the id of the order or product (what) a versioned change is for, and the
// version the client is changing; it answers the request itself when either is missing.
func (s *Shop) target(w http.ResponseWriter, r *http.Request, what string) (id, version int64, ok bool) {
	if id, ok = pathID(r); !ok {
		s.fail(w, r, http.StatusNotFound, "There is no such "+what+".")
		return 0, 0, false
	}
	version, err := ifMatch(r)
	if err != nil {
		s.fail(w, r, http.StatusPreconditionRequired, err.Error())
		return 0, 0, false
	}
	return id, version, true
}

// updateFailed answers a versioned change of an order or product (what) that failed.
func (s *Shop) updateFailed(w http.ResponseWriter, r *http.Request, err error, what string) {
	switch {
	case errors.Is(err, occ.ErrConflict):
		s.fail(w, r, http.StatusPreconditionFailed, "This "+what+" was changed since you opened it (in another tab, or by someone else). Open it again to see the change.")
	case errors.Is(err, occ.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "There is no such "+what+".")
	default:
		s.failErr(w, r, err)
	}
}

// editOrder changes an order's quantity and note only if it is still at the version the
// client saw: two tabs (or two people) editing one order cannot overwrite each other.
func (s *Shop) editOrder(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, version, ok := s.target(w, r, "order")
	if !ok {
		return
	}
	qty, ok := formInt(r, "quantity", 99)
	if !ok {
		s.fail(w, r, http.StatusBadRequest, "Choose a quantity from 1 to 99.")
		return
	}
	user := session.UserID(ctx)
	var next int64
	err := s.node.Store().InTx(ctx, func(tx store.Tx) error {
		var err error
		next, err = s.node.Versions().UpdateTx(ctx, tx, occ.UpdateParams{Table: "shop_orders",
			Key: map[string]any{"id": id, "user_id": user},
			Set: map[string]any{"quantity": qty, "note": strings.TrimSpace(r.PostFormValue("note"))}, Version: version})
		return err
	})
	if err != nil {
		s.updateFailed(w, r, err, "order")
		return
	}
	occ.SetETag(w, next)
	http.Redirect(w, r, fmt.Sprintf("/orders/%d?flash=%s", id, url.QueryEscape(fmt.Sprintf("Saved as version %d.", next))), http.StatusSeeOther)
}

func (s *Shop) adminPage(w http.ResponseWriter, r *http.Request) {
	c, err := s.catalogue.Get(r.Context(), catalogueKey)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "admin", "Admin", c)
}

// editPrice changes a product's price (if it is still at the version the form showed) and
// invalidates the catalogue in the same transaction: every instance drops its cached copy
// once the change commits, so no instance shows the old price afterwards.
func (s *Shop) editPrice(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, version, ok := s.target(w, r, "product")
	if !ok {
		return
	}
	euros, err := strconv.ParseFloat(r.PostFormValue("price"), 64)
	if err != nil || euros <= 0 || euros > 100000 {
		s.fail(w, r, http.StatusBadRequest, "Give a price in euros, above 0 and at most 100000.")
		return
	}
	cents := int64(euros*100 + 0.5)
	err = s.node.Store().InTx(ctx, func(tx store.Tx) error {
		if _, err := s.node.Versions().UpdateTx(ctx, tx, occ.UpdateParams{Table: "shop_products",
			Key: map[string]any{"id": id}, Set: map[string]any{"price_cents": cents}, Version: version}); err != nil {
			return err
		}
		return s.catalogue.InvalidateTx(ctx, tx, catalogueKey)
	})
	if err != nil {
		s.updateFailed(w, r, err, "product")
		return
	}
	http.Redirect(w, r, "/admin?flash="+url.QueryEscape("Price saved; every instance's catalogue now shows it."), http.StatusSeeOther)
}

func (s *Shop) reportsPage(w http.ResponseWriter, r *http.Request) {
	reports, err := s.readReports(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "reports", "Reports", reports)
}

// chatLines is how many of the room's last messages the chat shows when it opens.
const chatLines = 50

// chatView is the chat page's data: the room's last messages, who is in the room now, and
// the position of the newest message in the hub's room, which the page's script resumes
// from (0 and no epoch: the room's beginning).
type chatView struct {
	Room     string
	Messages []Message
	Online   []string
	Offset   int64
	Epoch    string
	Error    string
}

func (s *Shop) chatPage(w http.ResponseWriter, r *http.Request) {
	s.renderChat(w, r, http.StatusOK, "")
}

// renderChat renders the chat page, with problem above its form if there is one.
func (s *Shop) renderChat(w http.ResponseWriter, r *http.Request, status int, problem string) {
	ctx := r.Context()
	msgs, err := s.room.Recent(ctx, supportRoom, chatLines)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	online, err := s.node.Presence().Online(ctx, supportRoom)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	v := chatView{Room: supportRoom, Messages: msgs, Online: online, Error: problem}
	if n := len(msgs); n > 0 {
		v.Offset, v.Epoch = msgs[n-1].Pos.Offset, msgs[n-1].Pos.Epoch
	}
	s.render(w, r, status, "chat", "Support chat", v)
}

// chatOnline lists the users whose chat page is connected to the hub, on any instance:
// each of the hub's connections is a presence connection in the rooms it follows.
func (s *Shop) chatOnline(w http.ResponseWriter, r *http.Request) {
	online, err := s.node.Presence().Online(r.Context(), supportRoom)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if online == nil {
		online = []string{} // a list, not null, for the page's script
	}
	writeJSON(w, http.StatusOK, map[string]any{"online": online})
}

// postChat stores and sends a message. The page's script posts with fetch and asks for
// JSON (the message comes back to it through the hub, as to everyone); a browser without
// script posts the form and is sent back to the page, which shows it.
func (s *Shop) postChat(w http.ResponseWriter, r *http.Request) {
	script := r.Header.Get("Accept") == "application/json"
	body, err := checkMessage(r.PostFormValue("body"))
	if err != nil {
		if script {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		} else {
			s.renderChat(w, r, http.StatusBadRequest, err.Error())
		}
		return
	}
	m, err := s.room.Post(r.Context(), supportRoom, session.UserID(r.Context()), body)
	if err != nil {
		s.log.Error("shop: posting to the chat", "err", err)
		if script {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "the message was not sent; try again"})
		} else {
			s.failErr(w, r, err)
		}
		return
	}
	if script {
		writeJSON(w, http.StatusOK, m)
		return
	}
	http.Redirect(w, r, "/chat", http.StatusSeeOther)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
