package idempotency

import (
	"errors"
	"fmt"
	"strings"
)

// Header is the request header that carries the key.
const Header = "Idempotency-Key"

// MaxKeyLen is the longest key accepted, in bytes.
const MaxKeyLen = 255

// Errors of [ParseKey].
var (
	ErrKeyMissing = errors.New("idempotency: no Idempotency-Key header")
	ErrKeyInvalid = errors.New("idempotency: invalid Idempotency-Key header")
)

// ParseKey returns the key of the Idempotency-Key header given as its field lines (as in
// r.Header.Values). The draft defines the field as a Structured Field String, a quoted
// string such as "8e03978e-40d5-43e8-bc93-6894a57f9324"; many clients send the bare
// token instead, which is accepted when it is 1 to MaxKeyLen visible ASCII characters with
// no quote, backslash or comma. Several field lines, parameters, an empty key, or
// characters outside printable ASCII are refused.
func ParseKey(lines []string) (string, error) {
	if len(lines) == 0 {
		return "", ErrKeyMissing
	}
	if len(lines) > 1 {
		return "", fmt.Errorf("%w: sent %d times", ErrKeyInvalid, len(lines))
	}
	v := strings.Trim(lines[0], " \t")
	if v == "" {
		return "", fmt.Errorf("%w: empty", ErrKeyInvalid)
	}
	var key string
	if v[0] == '"' {
		var rest string
		var err error
		key, rest, err = parseString(v)
		if err != nil {
			return "", err
		}
		if rest != "" {
			return "", fmt.Errorf("%w: unexpected %q after the key (parameters and lists are not allowed)", ErrKeyInvalid, limit(rest))
		}
	} else {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == ',' || c == ';' {
				return "", fmt.Errorf("%w: character %q at %d; quote the key as a string", ErrKeyInvalid, c, i)
			}
		}
		key = v
	}
	if key == "" {
		return "", fmt.Errorf("%w: empty", ErrKeyInvalid)
	}
	if len(key) > MaxKeyLen {
		return "", fmt.Errorf("%w: %d bytes, the limit is %d", ErrKeyInvalid, len(key), MaxKeyLen)
	}
	return key, nil
}

// parseString parses an RFC 8941 sf-string at the start of v and returns it unescaped and
// what follows it.
func parseString(v string) (s, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", "", fmt.Errorf("%w: bad escape in the quoted key", ErrKeyInvalid)
			}
			b.WriteByte(v[i])
		case c == '"':
			return b.String(), v[i+1:], nil
		case c < 0x20 || c >= 0x7f:
			return "", "", fmt.Errorf("%w: character %q in the quoted key", ErrKeyInvalid, c)
		default:
			b.WriteByte(c)
		}
		if b.Len() > MaxKeyLen {
			return "", "", fmt.Errorf("%w: longer than %d bytes", ErrKeyInvalid, MaxKeyLen)
		}
	}
	return "", "", fmt.Errorf("%w: unterminated quoted key", ErrKeyInvalid)
}

func limit(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}
