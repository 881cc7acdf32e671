package presence_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/store"
)

// User ids and room names come from clients: CheckUser and CheckRoom accept exactly 1 to
// 256 bytes of UTF-8 without NUL, and say why they refuse anything else.
func FuzzCheckNames(f *testing.F) {
	for _, s := range []string{"alice", "", "room:42", "a\x00b", "\xff", strings.Repeat("x", 257), "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := s != "" && len(s) <= 256 && utf8.ValidString(s) && !strings.Contains(s, "\x00")
		for _, c := range []struct {
			check func(string) error
			bad   error
		}{{presence.CheckUser, presence.ErrBadUser}, {presence.CheckRoom, presence.ErrBadRoom}} {
			err := c.check(s)
			if ok != (err == nil) {
				t.Fatalf("%q: %v", s, err)
			}
			if err != nil && (!errors.Is(err, c.bad) || !utf8.ValidString(err.Error()) && utf8.ValidString(s)) {
				t.Fatalf("%q: %v", s, err)
			}
		}
	})
}

// Names from clients are checked before anything is written, with an error that says why.
func ExampleCheckRoom() {
	fmt.Println(presence.CheckRoom("room:42"))
	fmt.Println(presence.CheckRoom(""))
	fmt.Println(errors.Is(presence.CheckUser("a\x00b"), presence.ErrBadUser))
	// Output:
	// <nil>
	// presence: bad room: "" must be 1 to 256 bytes of UTF-8 without NUL
	// true
}

// Bad configuration and bad input are refused with errors that say what is wrong, before
// anything runs.
func TestClearErrors(t *testing.T) {
	ctx := context.Background()
	db := testdb.New(t, store.SQLite)
	s := db.Open(t, nil)
	if _, err := presence.New(block.Deps{Service: "chat", Instance: "a"}, presence.Config{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Fatalf("New without a store = %v", err)
	}
	d := block.Deps{Store: s, Service: "chat", Instance: "a"}
	if _, err := presence.New(d, presence.Config{Poll: -time.Second}); err == nil || !strings.Contains(err.Error(), "Poll") {
		t.Fatalf("New with a negative poll = %v", err)
	}
	p, err := presence.New(d, presence.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Connect(ctx, "alice"); err == nil || !strings.Contains(err.Error(), "Deps.Members") {
		t.Fatalf("Connect without a membership = %v", err)
	}
	if _, err := p.Connect(ctx, "", "lobby"); !errors.Is(err, presence.ErrBadUser) {
		t.Fatalf("Connect of no user = %v", err)
	}
	if _, err := p.Connect(ctx, "alice", "ok", strings.Repeat("r", presence.MaxRoom+1)); !errors.Is(err, presence.ErrBadRoom) {
		t.Fatalf("Connect into a long room = %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close of an unused presence = %v", err)
	}
	if _, err := p.Online(ctx, ""); !errors.Is(err, presence.ErrClosed) {
		t.Fatalf("Online after Close = %v", err)
	}
}
