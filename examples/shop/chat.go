package main

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twicehq/twice/store"
)

// Room is the support chat's room: where a message is posted, and what a reader sees. It is
// the seam for a realtime hub: the table room below is read by every instance when a page
// (or its frame, every two seconds) asks, so a message posted on one instance reaches
// users of every other; a hub would push it to their connections instead, behind the same
// two methods plus a subscription.
type Room interface {
	// Post stores a message from user in room.
	Post(ctx context.Context, room, user, body string) error
	// Recent returns room's last n messages, newest first (the frame shows the newest on
	// top: it has no script to scroll to the bottom).
	Recent(ctx context.Context, room string, n int) ([]Message, error)
}

// Message is one chat message.
type Message struct {
	ID       int64
	User     string
	Body     string
	PostedBy string // the instance that took it
	At       time.Time
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
	sqlPostChat = `INSERT INTO shop_chat (room, user_id, body, posted_by) VALUES ($1, $2, $3, $4)`
	sqlChat     = `SELECT id, user_id, body, posted_by, created_at FROM shop_chat WHERE room = $1 ORDER BY id DESC LIMIT $2`
)

// TableRoom is a [Room] in the shop's table shop_chat.
type TableRoom struct {
	s        *store.Store
	instance string
}

// NewTableRoom returns the room stored in s, posting as instance.
func NewTableRoom(s *store.Store, instance string) *TableRoom {
	return &TableRoom{s: s, instance: instance}
}

// Post stores the message.
func (t *TableRoom) Post(ctx context.Context, room, user, body string) error {
	_, err := t.s.Exec(ctx, sqlPostChat, room, user, body, t.instance)
	return err
}

// Recent reads the last n messages.
func (t *TableRoom) Recent(ctx context.Context, room string, n int) ([]Message, error) {
	rows, err := t.s.Reader().Query(ctx, sqlChat, room, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var at store.Time
		if err := rows.Scan(&m.ID, &m.User, &m.Body, &m.PostedBy, &at); err != nil {
			return nil, err
		}
		m.At = at.Time
		out = append(out, m)
	}
	return out, rows.Err()
}
