package realtime

import (
	"strings"
	"testing"
)

// FuzzParseFrame: any input gives a frame that passes the checks or an error, never a
// panic; an accepted frame holds a valid room and, for a publish, data within the limit.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","room":"lobby"}`,
		`{"type":"subscribe","room":"lobby","offset":41,"epoch":"e1"}`,
		`{"type":"subscribe","room":"@user","offset":0}`,
		`{"type":"unsubscribe","room":"lobby"}`,
		`{"type":"publish","room":"lobby","data":{"a":[1,2]},"id":"c7"}`,
		`{"type":"publish","room":"@user","data":1}`,
		`{"type":"subscribe","room":"lobby","offset":-1}`,
		`{"type":"nope"}`, `{"type":"subscribe","room":""}`, `[]`, `{} {}`, `{"type":"subscribe","room":"a\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := parseFrame(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "realtime: bad frame") {
				t.Fatalf("error %q does not say it is a bad frame", err)
			}
			return
		}
		if fr.Room != UserRoom && CheckRoom(fr.Room) != nil {
			t.Fatalf("accepted room %q", fr.Room)
		}
		if fr.Type == "publish" && (len(fr.Data) == 0 || len(fr.Data) > MaxMessage || fr.Room == UserRoom) {
			t.Fatalf("accepted publish %+v", fr)
		}
		if fr.Offset != nil && *fr.Offset < 0 {
			t.Fatalf("accepted offset %d", *fr.Offset)
		}
	})
}

func TestParseFrameErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"subscribe","room":"@x"}`:             "names starting with @",
		`{"type":"publish","room":"a"}`:                "publish without data",
		`{"type":"subscribe","room":"a","epoch":"e"}`:  "an epoch without an offset",
		`{"type":"subscribe","room":"a","extra":1}`:    "unknown field",
		`{"type":"shout","room":"a"}`:                  "unknown type",
		`{"type":"publish","room":"@user","data":"x"}`: "cannot publish",
		`{"type":"subscribe","room":"a","offset":-3}`:  "negative offset",
	} {
		if _, err := parseFrame([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

func TestRecoverable(t *testing.T) {
	for _, c := range []struct {
		off        int64
		want, cur  string
		top, first int64
		ok         bool
	}{
		{5, "e", "e", 5, 0, true},  // at the end, history pruned: nothing missed
		{3, "e", "e", 5, 4, true},  // 4 and 5 kept
		{2, "e", "e", 5, 4, false}, // 3 pruned
		{3, "e", "f", 5, 1, false}, // reset
		{6, "e", "e", 5, 1, false}, // ahead of the stream
		{0, "", "e", 3, 1, true},   // subscribed before the first message
		{0, "", "e", 3, 2, false},  // ... whose first is pruned
		{0, "", "", 0, 0, true},    // still no message
		{3, "e", "", 0, 0, false},  // forgotten
	} {
		if got := recoverable(c.off, c.want, c.cur, c.top, c.first); got != c.ok {
			t.Errorf("%+v: %v", c, got)
		}
	}
}
