package clusterkey

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"testing"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestCheckRejectsShortSecretsWithoutShowingThem(t *testing.T) {
	t.Parallel()
	short := []byte("hunter2-hunter2-hunter2-hunter2") // 31 bytes
	err := Check(short)
	if err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("Check(31 bytes) = %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error shows the secret: %v", err)
	}
	if _, err := Derive(short, Bus, "svc"); err == nil {
		t.Fatal("Derive accepted a short secret")
	}
	if err := Check(secret); err != nil {
		t.Fatal(err)
	}
}

func TestKeysArePerPurposeAndScope(t *testing.T) {
	t.Parallel()
	tag := func(p Purpose, scope string, s []byte) []byte {
		k, err := Derive(s, p, scope)
		if err != nil {
			t.Fatal(err)
		}
		return k.Sum(nil, []byte("a"), []byte("b"))
	}
	base := tag(Bus, "svc", secret)
	if len(base) != Size {
		t.Fatalf("tag of %d bytes", len(base))
	}
	if !bytes.Equal(base, tag(Bus, "svc", secret)) {
		t.Fatal("the same key gives different tags")
	}
	other := append([]byte(nil), secret...)
	other[0] ^= 1
	for name, got := range map[string][]byte{
		"other purpose": tag(HTTP, "svc", secret),
		"other scope":   tag(Bus, "svc2", secret),
		"other secret":  tag(Bus, "svc", other),
	} {
		if bytes.Equal(base, got) {
			t.Errorf("%s: same tag", name)
		}
	}
	// The derived key is not the secret itself.
	raw := hmac.New(sha256.New, secret)
	raw.Write([]byte{0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b'})
	if bytes.Equal(base, raw.Sum(nil)) {
		t.Fatal("the secret is used as the key directly")
	}
}

func TestFieldsAreDelimited(t *testing.T) {
	t.Parallel()
	k, err := Derive(secret, Bus, "svc")
	if err != nil {
		t.Fatal(err)
	}
	ab := k.Sum(nil, []byte("ab"), []byte("c"))
	if bytes.Equal(ab, k.Sum(nil, []byte("a"), []byte("bc"))) {
		t.Fatal("moving a byte between fields keeps the tag")
	}
	if !k.Verify(ab, []byte("ab"), []byte("c")) {
		t.Fatal("a tag does not verify")
	}
	bad := append([]byte(nil), ab...)
	bad[5] ^= 0x40
	if k.Verify(bad, []byte("ab"), []byte("c")) || k.Verify(ab[:16], []byte("ab"), []byte("c")) {
		t.Fatal("an altered or truncated tag verifies")
	}
}

func TestRandomIsAnAcceptedSecret(t *testing.T) {
	a, b := Random(), Random()
	if err := Check(a); err != nil || len(a) != MinLen {
		t.Fatalf("%d bytes: %v", len(a), err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two random secrets are equal")
	}
}
