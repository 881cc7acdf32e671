package presence_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twicehq/twice/presence"
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
