package store_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twicehq/twice/store"
)

func TestText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 0, "plain"},
		{"bad \xff byte", 0, "bad \uFFFD byte"},
		{"nul \x00 byte", 0, "nul  byte"},
		{"ééé", 3, "é"}, // 6 bytes; a cut at 3 would split the second é
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
	} {
		if got := store.Text(c.in, c.max); got != c.want {
			t.Errorf("Text(%q, %d) = %q; want %q", c.in, c.max, got, c.want)
		}
	}
}

func FuzzText(f *testing.F) {
	for _, s := range []string{"", "a", "\xff\x00é", strings.Repeat("é", 10)} {
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		got := store.Text(s, max)
		if !utf8.ValidString(got) || strings.IndexByte(got, 0) >= 0 {
			t.Fatalf("Text(%q, %d) = %q: not keepable", s, max, got)
		}
		if max > 0 && len(got) > max {
			t.Fatalf("Text(%q, %d) = %q: longer than %d", s, max, got, max)
		}
	})
}
