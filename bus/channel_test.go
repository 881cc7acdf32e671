package bus

import (
	"strings"
	"testing"
)

// Every (schema, service) pair gets its own NOTIFY channel, of at most 63 bytes: a shared
// channel would deliver one deployment's signals to another.
func TestPGChannelIsInjective(t *testing.T) {
	long := strings.Repeat("s", 60)
	pairs := [][2]string{
		{"a.b", "c"}, {"a", "b.c"}, // "twice.a.b.c" both, before
		{"a", "b"}, {"a.", "b"}, {"a", ".b"}, {"", "a.b"}, {"a.b", ""},
		{"public", "shop"}, {"Public", "shop"}, {"public", "shop.eu"}, {"public.shop", "eu"},
		{long, "shop"}, {long + "x", "shop"}, {"public", long}, {"public", long + "x"},
		{"shop", "0123456789abcdef"}, {long, "shop." + long},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		c := pgChannel(p[0], p[1])
		if len(c) > 63 {
			t.Errorf("pgChannel(%q, %q) = %q, %d bytes", p[0], p[1], c, len(c))
		}
		if q, ok := seen[c]; ok {
			t.Errorf("pgChannel(%q, %q) = pgChannel(%q, %q) = %q", p[0], p[1], q[0], q[1], c)
		}
		seen[c] = p
	}
	if c := pgChannel("public", "shop"); c != "twice.public.shop" {
		t.Errorf("a short pair should keep its readable channel, got %q", c)
	}
}

func FuzzPGChannel(f *testing.F) {
	f.Add("a.b", "c", "a", "b.c")
	f.Add("public", "shop", "public", "shop")
	f.Fuzz(func(t *testing.T, s1, v1, s2, v2 string) {
		if strings.ContainsRune(s1+s2, 0) {
			return // not a schema name
		}
		c1, c2 := pgChannel(s1, v1), pgChannel(s2, v2)
		if len(c1) > 63 && len(v1) <= 128 {
			t.Fatalf("%q is %d bytes", c1, len(c1))
		}
		if c1 == c2 && (s1 != s2 || v1 != v2) {
			t.Fatalf("(%q, %q) and (%q, %q) share channel %q", s1, v1, s2, v2, c1)
		}
	})
}
