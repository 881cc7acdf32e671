package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/jobs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type payload struct {
	UserID int64             `json:"user_id"`
	Email  string            `json:"email"`
	Tags   []string          `json:"tags,omitempty"`
	Extra  map[string]string `json:"extra,omitempty"`
}

func (payload) Kind() string { return "payload" }

// FuzzDecodeArgs feeds arbitrary stored arguments to the decoder every worker uses: it must
// never panic, and whatever it accepts must survive a round trip unchanged.
func FuzzDecodeArgs(f *testing.F) {
	for _, seed := range []string{`{}`, `{"user_id":42,"email":"a@b.c"}`, `{"tags":["x","y"],"extra":{"k":"v"}}`,
		`null`, `[]`, `"str"`, `{"user_id":"42"}`, `{"user_id":1e400}`, `{`, ``, `{"email":"\u0000"}`, `{"user_id":1}{}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := jobs.DecodeArgs[payload](data)
		if err != nil {
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("decoded %q into %+v, which does not encode: %v", data, v, err)
		}
		// Compared as encoded: an empty map and a nil one are the same job.
		w, err := jobs.DecodeArgs[payload](again)
		if err != nil {
			t.Fatalf("round trip of %q: %s does not decode: %v", data, again, err)
		}
		if third, _ := json.Marshal(w); string(third) != string(again) {
			t.Fatalf("round trip of %q: %s then %s", data, again, third)
		}
	})
}

// A decode that fails part way leaves nothing of what it read: the decoder sets user_id
// before it meets the number where the email's string belongs.
func TestDecodeArgsReturnsTheZeroValueWithItsError(t *testing.T) {
	v, err := jobs.DecodeArgs[payload]([]byte(`{"user_id":42,"email":5}`))
	if err == nil || v.UserID != 0 {
		t.Fatalf("got %+v, %v; want the zero payload and an error", v, err)
	}
}

func TestDecodeArgsRejectsOversizedInput(t *testing.T) {
	big := make([]byte, jobs.MaxArgsBytes+1)
	if _, err := jobs.DecodeArgs[payload](big); err == nil {
		t.Fatal("oversized args accepted")
	}
}

func TestDefaultBackoff(t *testing.T) {
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 30: time.Hour, 1000: time.Hour} {
		for range 20 {
			got := jobs.DefaultBackoff(attempt)
			if got < want*8/10 || got > want*12/10 {
				t.Errorf("backoff after attempt %d: %v, want %v ±20%%", attempt, got, want)
			}
		}
	}
}

func TestParseState(t *testing.T) {
	for _, s := range []string{"available", "running", "completed", "cancelled", "discarded", "waiting"} {
		if st, err := jobs.ParseState(s); err != nil || string(st) != s {
			t.Errorf("ParseState(%q) = %q, %v", s, st, err)
		}
	}
	if _, err := jobs.ParseState("done"); err == nil {
		t.Error("unknown state accepted")
	}
}
