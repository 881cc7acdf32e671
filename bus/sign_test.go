package bus_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/bus"
)

func TestSignerNeedsALongSecret(t *testing.T) {
	t.Parallel()
	short := []byte("correct-horse-battery-staple")
	_, err := bus.NewSigner(bus.SignerConfig{Secret: short, Service: "svc"})
	if err == nil || !strings.Contains(err.Error(), "at least 32") || strings.Contains(err.Error(), "horse") {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := bus.NewSigner(bus.SignerConfig{Secret: make([]byte, 32)}); err == nil {
		t.Fatal("a signer without a service")
	}
}

func TestNilSignerPassesThrough(t *testing.T) {
	t.Parallel()
	var s *bus.Signer
	p := []byte("payload")
	if got := s.Sign("c", "i", p); !bytes.Equal(got, p) {
		t.Fatalf("Sign = %q", got)
	}
	if got, ok := s.Open("c", "i", p); !ok || !bytes.Equal(got, p) {
		t.Fatalf("Open = %q, %v", got, ok)
	}
	if s.Stats() != (bus.SignerStats{}) {
		t.Fatal("a nil signer counts")
	}
}

// A message's send time may lie up to MaxAge from the receiver's clock, either way.
func TestSignerWindow(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("s", bus.MinSecret))
	now := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) *bus.Signer {
		s, err := bus.NewSigner(bus.SignerConfig{Secret: secret, Service: "svc", MaxAge: 10 * time.Second,
			Now: func() time.Time { return now.Add(d) }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	recv := at(0)
	for d, want := range map[time.Duration]bool{0: true, 10 * time.Second: true, -10 * time.Second: true,
		11 * time.Second: false, -11 * time.Second: false, time.Hour: false} {
		signed := at(d).Sign("c", "i", []byte("p"))
		if len(signed) != bus.SignatureSize+1 {
			t.Fatalf("signed payload of %d bytes", len(signed))
		}
		if got, ok := recv.Open("c", "i", signed); ok != want || ok && string(got) != "p" {
			t.Errorf("sent %v from the receiver's clock: Open = %q, %v; want %v", d, got, ok, want)
		}
	}
	if st := recv.Stats(); st.Verified != 3 || st.Stale != 3 || st.Dropped() != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// The cost signing adds to each message: go test ./bus -run - -bench Signer.
func BenchmarkSigner(b *testing.B) {
	s, err := bus.NewSigner(bus.SignerConfig{Secret: []byte(strings.Repeat("s", bus.MinSecret)), Service: "svc"})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{8, 100, bus.MaxPayload} {
		payload := make([]byte, size)
		b.Run("Sign/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Sign("twice.jobs", "host-1234-abcdef", payload)
			}
		})
		signed := s.Sign("twice.jobs", "host-1234-abcdef", payload)
		b.Run("Open/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.Open("twice.jobs", "host-1234-abcdef", signed); !ok {
					b.Fatal("does not verify")
				}
			}
		})
	}
}
