package session

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
)

// tokenBytes is the entropy of a session token: 256 bits.
const tokenBytes = 32

// tokenLen is the length of a token in a cookie: unpadded base64url of tokenBytes.
var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// errMalformed is why a cookie was ignored; it is logged at debug, never returned.
var errMalformed = errors.New("session: malformed token")

// newToken returns a fresh token for the cookie and the hash stored in its place.
func newToken() (token string, hash []byte) {
	var b [tokenBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	sum := sha256.Sum256(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]), sum[:]
}

// DecodeToken checks a cookie value and returns the hash of the token it carries. Anything
// but exactly one canonical token is rejected, so a tampered, truncated, padded or oversized
// cookie can never reach the database.
func DecodeToken(v string) (hash []byte, err error) {
	if len(v) != tokenLen {
		return nil, errMalformed
	}
	var b [tokenBytes]byte
	n, err := base64.RawURLEncoding.Strict().Decode(b[:], []byte(v))
	if err != nil || n != tokenBytes {
		return nil, errMalformed
	}
	sum := sha256.Sum256(b[:])
	return sum[:], nil
}

// newID returns the internal id of a new session: random, never sent to a client.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
