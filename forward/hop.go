package forward

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twicehq/twice/internal/clusterkey"
)

// HopHeader carries the signature of a request one instance forwards to another. Its value
// is "v1.FROM.TO.MS.TAG": the sending and receiving instance ids (base64url, unpadded), the
// send time in Unix milliseconds and the HMAC-SHA256 tag (base64url, unpadded). A request
// that carries it is never forwarded again, and one whose signature does not hold is
// refused. The receiving middleware removes it before the application sees the request.
const HopHeader = "Twice-Forwarded"

// hopVersion is the first field of the header and of the signed input.
const hopVersion = "v1"

// maxInstanceLen bounds an instance id in the header; ids are short (host-pid-random).
const maxInstanceLen = 256

// hop is a parsed HopHeader.
type hop struct {
	from, to string
	at       int64 // Unix milliseconds
	tag      []byte
}

// b64 encodes the header's binary fields. Strict, and with isB64 refusing the line breaks
// the decoder would skip, so every accepted value has one spelling.
var b64 = base64.RawURLEncoding.Strict()

func isB64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// errHop is the cause of every header that does not parse.
var errHop = errors.New("forward: malformed " + HopHeader + " header")

// parseHop parses a HopHeader value. It checks the form only, not the signature.
func parseHop(v string) (hop, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 5 || parts[0] != hopVersion {
		return hop{}, fmt.Errorf("%w: want v1.FROM.TO.MS.TAG", errHop)
	}
	var h hop
	var err error
	if h.from, err = instanceField(parts[1]); err != nil {
		return hop{}, fmt.Errorf("%w: sender: %w", errHop, err)
	}
	if h.to, err = instanceField(parts[2]); err != nil {
		return hop{}, fmt.Errorf("%w: target: %w", errHop, err)
	}
	ms := parts[3]
	if ms == "" || len(ms) > 19 || strings.TrimLeft(ms, "0123456789") != "" {
		return hop{}, fmt.Errorf("%w: the time is not a count of milliseconds", errHop)
	}
	if h.at, err = strconv.ParseInt(ms, 10, 64); err != nil {
		return hop{}, fmt.Errorf("%w: the time is out of range", errHop)
	}
	if len(parts[4]) != b64.EncodedLen(clusterkey.Size) {
		return hop{}, fmt.Errorf("%w: the tag is not %d bytes", errHop, clusterkey.Size)
	}
	if h.tag, err = b64.DecodeString(parts[4]); err != nil || !isB64(parts[4]) {
		return hop{}, fmt.Errorf("%w: the tag is not base64url", errHop)
	}
	return h, nil
}

func instanceField(s string) (string, error) {
	if s == "" || len(s) > b64.EncodedLen(maxInstanceLen) {
		return "", errors.New("empty or too long")
	}
	b, err := b64.DecodeString(s)
	if err != nil || !isB64(s) {
		return "", errors.New("not base64url")
	}
	return string(b), nil
}

// String formats h as a HopHeader value; parseHop(h.String()) gives h back.
func (h hop) String() string {
	return hopVersion + "." + b64.EncodeToString([]byte(h.from)) + "." + b64.EncodeToString([]byte(h.to)) + "." +
		strconv.FormatInt(h.at, 10) + "." + b64.EncodeToString(h.tag)
}

// signed is what a hop's tag covers besides the key's purpose and service.
type signed struct {
	method, uri string
	body        [sha256.Size]byte
}

// fields lists the signed input of h for s: version, method, request target, body hash,
// time, sender and target, each length-prefixed by the key.
func (h hop) fields(s signed) [][]byte {
	var at [8]byte
	binary.BigEndian.PutUint64(at[:], uint64(h.at))
	return [][]byte{[]byte(hopVersion), []byte(s.method), []byte(s.uri), s.body[:], at[:], []byte(h.from), []byte(h.to)}
}

// sign returns the hop from one instance to another at now for s.
func sign(k *clusterkey.Key, from, to string, now time.Time, s signed) hop {
	h := hop{from: from, to: to, at: now.UnixMilli()}
	h.tag = k.Sum(nil, h.fields(s)...)
	return h
}

// verify reports, in constant time, whether h's tag is the tag of s under k.
func (h hop) verify(k *clusterkey.Key, s signed) bool {
	return k.Verify(h.tag, h.fields(s)...)
}
