// Package clusterkey turns the cluster secret (twice.Config.ClusterSecret) into keys, one
// per purpose, and computes and checks the HMAC-SHA256 tags made with them. Bus messages
// are signed with one key; the requests one instance forwards to another (package forward)
// with another, derived from the same secret, so a tag made for one purpose is never
// accepted for another.
package clusterkey

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
)

// MinLen is the shortest secret accepted, in bytes: 256 bits, the strength of the tags.
const MinLen = 32

// Size is the length of a tag, in bytes.
const Size = sha256.Size

// Purpose names what a key is for. Each purpose derives an independent key.
type Purpose string

const (
	// Bus signs the messages of the bus.
	Bus Purpose = "twice/bus/v1"
	// HTTP signs the requests one instance forwards to another (package forward).
	HTTP Purpose = "twice/http/v1"
)

// Check reports whether secret is long enough. The error never shows the secret.
func Check(secret []byte) error {
	if len(secret) < MinLen {
		return fmt.Errorf("clusterkey: the secret is %d bytes; at least %d are required (for example 32 random bytes, base64-encoded)", len(secret), MinLen)
	}
	return nil
}

// Key computes tags for one purpose and scope. It is safe for concurrent use.
type Key struct {
	macs sync.Pool // of hash.Hash keyed with the derived key; hmac.New is the costly part
}

// Derive returns the key of purpose within scope (a service name, say) for secret. Keys of
// different purposes or scopes are independent (HKDF-SHA256, the purpose and scope as its
// info), so a tag made under one never verifies under another.
func Derive(secret []byte, p Purpose, scope string) (*Key, error) {
	if err := Check(secret); err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, secret, nil, string(p)+"\x00"+scope, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("clusterkey: derive: %w", err)
	}
	return &Key{macs: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}, nil
}

// Sum appends to dst the tag of fields. Each field is prefixed with its length, so no two
// different lists of fields have the same input.
func (k *Key) Sum(dst []byte, fields ...[]byte) []byte {
	h := k.macs.Get().(hash.Hash)
	h.Reset()
	var n [4]byte
	for _, f := range fields {
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	dst = h.Sum(dst)
	k.macs.Put(h)
	return dst
}

// Verify reports, in constant time, whether tag is the tag of fields.
func (k *Key) Verify(tag []byte, fields ...[]byte) bool {
	var buf [Size]byte
	return hmac.Equal(tag, k.Sum(buf[:0], fields...))
}

// Random returns a new random secret of [MinLen] bytes: for tools and tests that start
// instances sharing one (a benchmark, the checker), never a secret to keep.
func Random() []byte {
	s := make([]byte, MinLen)
	_, _ = rand.Read(s) // crypto/rand.Read never fails
	return s
}
