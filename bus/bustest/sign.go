package bustest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/clusterkey"
)

// Secret returns a fresh random cluster secret.
func Secret() []byte {
	return clusterkey.Random()
}

// NewSigner returns a signer of service for secret, nil if secret is nil. now, if set,
// replaces its clock.
func NewSigner(t testing.TB, service string, secret []byte, now func() time.Time) *bus.Signer {
	t.Helper()
	if secret == nil {
		return nil
	}
	s, err := bus.NewSigner(bus.SignerConfig{Secret: secret, Service: service, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signing checks that a bus with a signer hears only its own cluster.
func signing(t *testing.T, newBackend func(t *testing.T) Backend) {
	ctx := context.Background()

	// Unsigned, altered, misdirected, spoofed and replayed messages put on the transport are
	// dropped and counted; a correctly signed one put there the same way arrives.
	t.Run("SignedDropsOutsiders", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		if len(b.Inject) == 0 {
			t.Skip("backend has no injector")
		}
		secret := Secret()
		signer := NewSigner(t, b.Service, secret, nil)
		a := b.Open(t, "i0", signer)
		in := newInbox()
		t.Cleanup(a.Subscribe("raw", in.handle))
		insider := NewSigner(t, b.Service, secret, nil)
		late := NewSigner(t, b.Service, secret, func() time.Time { return time.Now().Add(-2 * bus.DefaultMaxAge) })
		for name, inject := range b.Inject {
			inject(t, "raw", []byte("unsigned "+name), "i9")
			tampered := insider.Sign("raw", "i9", []byte("tampered "+name))
			tampered[len(tampered)-1] ^= 1
			inject(t, "raw", tampered, "i9")
			inject(t, "raw", NewSigner(t, b.Service, Secret(), nil).Sign("raw", "i9", []byte("other secret "+name)), "i9")
			inject(t, "raw", NewSigner(t, b.Service+"-other", secret, nil).Sign("raw", "i9", []byte("other service "+name)), "i9")
			inject(t, "raw", insider.Sign("other", "i9", []byte("other channel "+name)), "i9")
			inject(t, "raw", insider.Sign("raw", "i9", []byte("spoofed sender "+name)), "i8")
			inject(t, "raw", late.Sign("raw", "i9", []byte("replayed "+name)), "i9")
			inject(t, "raw", insider.Sign("raw", "i9", []byte("good "+name)), "i9")
		}
		ms := in.waitFor(t, "every correctly signed message", func(ms []bus.Message) bool { return len(ms) >= len(b.Inject) })
		for _, m := range ms {
			name, good := strings.CutPrefix(string(m.Payload), "good ")
			if !good || b.Inject[name] == nil || m.From != "i9" {
				t.Fatalf("delivered %q from %q", m.Payload, m.From)
			}
		}
		n := uint64(len(b.Inject))
		if st := signer.Stats(); st.Unsigned != n || st.Forged != 5*n || st.Stale != n || st.Verified != n || st.Dropped() != 7*n {
			t.Fatalf("stats %+v for %d injectors", st, n)
		}
	})

	// Two instances with different secrets do not hear each other, by Publish or PublishTx.
	t.Run("DifferentSecretsDoNotHear", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		sa, sc := NewSigner(t, b.Service, Secret(), nil), NewSigner(t, b.Service, Secret(), nil)
		a, c := b.Open(t, "i0", sa), b.Open(t, "i1", sc)
		onA, onC := newInbox(), newInbox()
		t.Cleanup(a.Subscribe("x", onA.handle))
		t.Cleanup(c.Subscribe("x", onC.handle))
		if b.Begin != nil {
			tx := b.Begin(t)
			if err := a.PublishTx(ctx, tx.Handle(), "x", []byte("a in tx")); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			onA.waitFor(t, "a hears its own PublishTx", func(ms []bus.Message) bool { return payloads(ms)["a in tx"] == 1 })
		}
		if err := a.Publish(ctx, "x", []byte("a")); err != nil {
			t.Fatal(err)
		}
		onA.waitFor(t, "a hears itself", func(ms []bus.Message) bool { return payloads(ms)["a"] == 1 })
		if err := c.Publish(ctx, "x", []byte("c")); err != nil {
			t.Fatal(err)
		}
		// Signals on a channel arrive in order: once c hears itself, a's are behind it.
		onC.waitFor(t, "c hears itself", func(ms []bus.Message) bool { return payloads(ms)["c"] == 1 })
		onA.waitFor(t, "a drops c's message", func([]bus.Message) bool { return sa.Stats().Forged >= 1 })
		if p := payloads(onC.snapshot()); len(p) != 1 {
			t.Fatalf("c heard %v", p)
		}
		if p := payloads(onA.snapshot()); p["c"] != 0 {
			t.Fatalf("a heard %v", p)
		}
		if sc.Stats().Forged == 0 {
			t.Fatalf("c counted nothing dropped: %+v", sc.Stats())
		}
	})
}
