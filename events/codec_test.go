package events

import (
	"errors"
	"testing"
)

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	h := map[string]string{"type": "OrderPlaced", "odd: name\r\n": "x\r\ny", "empty": ""}
	got, err := decodeHeaders(encodeHeaders(h))
	if err != nil || len(got) != 3 || got["odd: name\r\n"] != "x\r\ny" {
		t.Fatalf("decoded %v, %v", got, err)
	}
	if b := encodeHeaders(nil); b != nil {
		t.Fatalf("no headers stored as %q", b)
	}
	for _, bad := range []string{"[]", `{"a":1}`, `{"":"x"}`, "{", `"s"`} {
		if _, err := decodeHeaders([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if err := validHeaders(map[string]string{"a": string(make([]byte, MaxHeaderBytes))}); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized headers: %v", err)
	}
}

// FuzzDecodeHeaders feeds the headers column whatever a row could hold (written by another
// version, or by hand): decoding returns headers within the limits or an error, never
// panics.
func FuzzDecodeHeaders(f *testing.F) {
	f.Add([]byte(`{"type":"OrderPlaced"}`))
	f.Add([]byte(`{"a":"\r\n","b":""}`))
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte{0xff, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeaders(b)
		if err != nil {
			return
		}
		if err := validHeaders(h); err != nil {
			t.Fatalf("decoded headers break the limits: %v", err)
		}
		again, err := decodeHeaders(encodeHeaders(h))
		if err != nil || len(again) != len(h) {
			t.Fatalf("round trip of %v: %v, %v", h, again, err)
		}
	})
}
