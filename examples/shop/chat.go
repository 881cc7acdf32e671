package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twicehq/twice/realtime"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

// Room is the support chat's room: where a message is posted, and what a page shows when
// it opens. Live delivery is the realtime hub's: a posted message reaches the pages open
// on every instance through it.
type Room interface {
	// Post stores a message from user in room, and sends it to the room's connections.
	Post(ctx context.Context, room, user, body string) (Message, error)
	// Recent returns room's last n messages, oldest first.
	Recent(ctx context.Context, room string, n int) ([]Message, error)
}

// Message is one chat message, as stored and as the hub sends it to pages.
type Message struct {
	ID       int64             `json:"id"`
	User     string            `json:"user"`
	Body     string            `json:"body"`
	PostedBy string            `json:"by"` // the instance that took it
	At       time.Time         `json:"at"`
	Pos      realtime.Position `json:"-"` // its place in the hub's room
}

// maxMessage bounds a message's length, in characters.
const maxMessage = 500

// errEmptyMessage and errLongMessage are a message refused before it is stored.
var (
	errEmptyMessage = errors.New("the message is empty")
	errLongMessage  = errors.New("the message is longer than 500 characters")
)

// checkMessage trims body and refuses an empty or overlong one.
func checkMessage(body string) (string, error) {
	body = strings.TrimSpace(body)
	switch {
	case body == "":
		return "", errEmptyMessage
	case utf8.RuneCountInString(body) > maxMessage || !utf8.ValidString(body):
		return "", errLongMessage
	}
	return body, nil
}

const (
	sqlPostChat = `INSERT INTO shop_chat (room, user_id, body, posted_by, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id`
	sqlChatPos  = `UPDATE shop_chat SET room_offset = $2, room_epoch = $3 WHERE id = $1`
	sqlChat     = `SELECT id, user_id, body, posted_by, created_at, room_offset, room_epoch
		FROM shop_chat WHERE room = $1 ORDER BY id DESC LIMIT $2`
)

// HubRoom is a [Room] whose history is the shop's table shop_chat and whose messages are
// delivered by the realtime hub: each one is stored and published in one transaction, so a
// page sees every stored message once, live or when it opens.
type HubRoom struct {
	s        *store.Store
	hub      *realtime.Hub
	instance string
}

// NewHubRoom returns the room stored in s and delivered by hub, posting as instance.
func NewHubRoom(s *store.Store, hub *realtime.Hub, instance string) *HubRoom {
	return &HubRoom{s: s, hub: hub, instance: instance}
}

// Post stores the message and publishes it to the hub's room in the same transaction
// (the outbox): it is sent if and only if it is stored. Its position in the room is
// stored with it, for the pages that open later to resume from.
func (h *HubRoom) Post(ctx context.Context, room, user, body string) (Message, error) {
	m := Message{User: user, Body: body, PostedBy: h.instance, At: time.Now().UTC().Truncate(time.Millisecond)}
	err := h.s.InTx(ctx, func(tx store.Tx) error {
		if err := tx.QueryRow(ctx, sqlPostChat, room, user, body, h.instance, h.s.TimeArg(m.At)).Scan(&m.ID); err != nil {
			return err
		}
		pos, err := h.hub.PublishTx(ctx, tx, room, m)
		if err != nil {
			return err
		}
		m.Pos = pos
		_, err = tx.Exec(ctx, sqlChatPos, m.ID, pos.Offset, pos.Epoch)
		return err
	})
	return m, err
}

// Recent reads the last n messages.
func (h *HubRoom) Recent(ctx context.Context, room string, n int) ([]Message, error) {
	rows, err := h.s.Reader().Query(ctx, sqlChat, room, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var at store.Time
		if err := rows.Scan(&m.ID, &m.User, &m.Body, &m.PostedBy, &at, &m.Pos.Offset, &m.Pos.Epoch); err != nil {
			return nil, err
		}
		m.At = at.Time
		out = append(out, m)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, rows.Err()
}

// authenticate is the hub's Config.Authenticate: the connection's user is the session's,
// read from the shop's session cookie by the session middleware the hub's endpoint sits
// behind (see [Shop.routes]).
func authenticate(r *http.Request) (string, error) {
	if u := session.UserID(r.Context()); u != "" {
		return u, nil
	}
	return "", errors.New("shop: log in before opening the chat")
}

// authorize lets a connection follow only the support room.
func authorize(_ context.Context, _, room string) error {
	if room != supportRoom {
		return errors.New("shop: the only room is " + supportRoom)
	}
	return nil
}
