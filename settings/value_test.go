package settings

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		t    Type
		in   string
		want any
	}{
		{TypeString, "", ""},
		{TypeString, "héllo world", "héllo world"},
		{TypeInt, "-42", int64(-42)},
		{TypeInt, "9223372036854775807", int64(math.MaxInt64)},
		{TypeFloat, "0.25", 0.25},
		{TypeFloat, "1e3", 1000.0},
		{TypeBool, "true", true},
		{TypeBool, "0", false},
		{TypeDuration, "1h30m", 90 * time.Minute},
		{TypeDuration, "250ms", 250 * time.Millisecond},
		{TypeJSON, ` { "a" : [1, 2] } `, json.RawMessage(`{"a":[1,2]}`)},
	} {
		got, err := Parse(c.t, c.in)
		if err != nil {
			t.Errorf("Parse(%s, %q): %v", c.t, c.in, err)
			continue
		}
		if g, w := mustJSON(t, got), mustJSON(t, c.want); g != w {
			t.Errorf("Parse(%s, %q) = %s, want %s", c.t, c.in, g, w)
		}
	}
	for _, c := range []struct {
		t  Type
		in string
	}{
		{TypeInt, "1.5"}, {TypeInt, "0x10"}, {TypeInt, "9223372036854775808"}, {TypeInt, ""},
		{TypeFloat, "NaN"}, {TypeFloat, "+Inf"}, {TypeFloat, "1e400"},
		{TypeBool, "yes"}, {TypeDuration, "5"}, {TypeJSON, "{"}, {TypeJSON, ""},
		{TypeString, "nul\x00byte"}, {TypeString, "\xff"}, {TypeJSON, "\"\xff\""}, {"decimal", "1"},
	} {
		if _, err := Parse(c.t, c.in); !errors.Is(err, ErrBadValue) {
			t.Errorf("Parse(%s, %q) = %v, want ErrBadValue", c.t, c.in, err)
		}
	}
	if _, err := Parse(TypeString, strings.Repeat("x", MaxValue+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized value: %v", err)
	}
	if _, err := Parse(TypeInt, "notanumber"); err == nil || !strings.Contains(err.Error(), `"notanumber" is not a valid int`) {
		t.Errorf("error message: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEncode(t *testing.T) {
	t.Parallel()
	type limits struct {
		Max int `json:"max"`
	}
	for _, c := range []struct {
		in       any
		typ      Type
		wantText string
	}{
		{"s", TypeString, "s"},
		{42, TypeInt, "42"},
		{uint32(7), TypeInt, "7"},
		{int8(-3), TypeInt, "-3"},
		{0.1, TypeFloat, "0.1"},
		{float32(0.5), TypeFloat, "0.5"},
		{true, TypeBool, "true"},
		{1500 * time.Millisecond, TypeDuration, "1.5s"},
		{json.RawMessage(`[ 1 ]`), TypeJSON, "[1]"},
		{limits{Max: 3}, TypeJSON, `{"max":3}`},
		{map[string]int{"a": 1}, TypeJSON, `{"a":1}`},
	} {
		typ, text, err := encode(c.in)
		if err != nil || typ != c.typ || text != c.wantText {
			t.Errorf("encode(%#v) = %s %q %v; want %s %q", c.in, typ, text, err, c.typ, c.wantText)
		}
	}
	for _, bad := range []any{nil, uint64(math.MaxUint64), math.NaN(), math.Inf(1), make(chan int),
		json.RawMessage("{"), "\xff", strings.Repeat("x", MaxValue+1)} {
		if _, _, err := encode(bad); err == nil {
			t.Errorf("encode(%T) accepted", bad)
		}
	}
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "feature.checkout/v2", "limits:upload_max-bytes", strings.Repeat("k", MaxKey)} {
		if err := CheckKey(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "with space", "naïve", strings.Repeat("k", MaxKey+1)} {
		if err := CheckKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParse feeds operator input to every type: it never panics, and whatever it accepts
// has a canonical text that reads back as the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "0", "-1", "1.5", "1e308", "true", "F", "1h2m3.5s", "-0s",
		`{"a":1}`, `[1, "x", null]`, "héllo", "\xff", "9223372036854775808", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, typ := range Types() {
			v, err := Parse(typ, s)
			if err != nil {
				if !errors.Is(err, ErrBadValue) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("Parse(%s, %q): untyped error %v", typ, s, err)
				}
				continue
			}
			gotType, text, err := encode(v)
			if err != nil || gotType != typ {
				t.Fatalf("Parse(%s, %q) = %#v, which encodes as %s %q (%v)", typ, s, v, gotType, text, err)
			}
			again, err := decode(typ, text)
			if err != nil {
				t.Fatalf("canonical %s %q of %q does not decode: %v", typ, text, s, err)
			}
			if _, text2, _ := encode(again); text2 != text {
				t.Fatalf("%s %q: canonical text %q is not stable (%q)", typ, s, text, text2)
			}
		}
	})
}
