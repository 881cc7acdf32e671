package occ

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadCondition is returned for an If-Match or If-None-Match field that is not "*" or a
// list of entity tags.
var ErrBadCondition = errors.New("occ: malformed precondition header")

// maxTags bounds the entity tags one precondition may list.
const maxTags = 64

// ETag returns the strong entity tag of version, such as "\"42\"".
func ETag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// Tag is one entity tag of a precondition.
type Tag struct {
	Weak   bool
	Opaque string // between the quotes
}

// String formats t as it appears in a header.
func (t Tag) String() string {
	if t.Weak {
		return `W/"` + t.Opaque + `"`
	}
	return `"` + t.Opaque + `"`
}

// Condition is a parsed If-Match or If-None-Match field: "*" or a list of entity tags.
type Condition struct {
	Any  bool
	Tags []Tag
}

// ParseIfMatch parses the field lines of If-Match (as in r.Header.Values). It returns
// ok false when the header is absent.
func ParseIfMatch(lines []string) (c Condition, ok bool, err error) { return parseCondition(lines) }

// ParseIfNoneMatch parses the field lines of If-None-Match.
func ParseIfNoneMatch(lines []string) (c Condition, ok bool, err error) {
	return parseCondition(lines)
}

// MatchStrong reports whether c admits the current strong tag etag by the strong
// comparison If-Match uses: a weak tag never matches (RFC 9110, 13.1.1).
func (c Condition) MatchStrong(etag string) bool {
	if c.Any {
		return true
	}
	cur, ok := parseTag(etag)
	if !ok || cur.Weak {
		return false
	}
	for _, t := range c.Tags {
		if !t.Weak && t.Opaque == cur.Opaque {
			return true
		}
	}
	return false
}

// MatchWeak reports whether c admits etag by the weak comparison If-None-Match uses: the
// opaque parts are equal, weak or not (RFC 9110, 13.1.2).
func (c Condition) MatchWeak(etag string) bool {
	if c.Any {
		return true
	}
	cur, ok := parseTag(etag)
	if !ok {
		return false
	}
	for _, t := range c.Tags {
		if t.Opaque == cur.Opaque {
			return true
		}
	}
	return false
}

func parseTag(s string) (Tag, bool) {
	t, rest, err := nextTag(s)
	return t, err == nil && rest == ""
}

// parseCondition parses `"*" / #entity-tag` over one or more field lines.
func parseCondition(lines []string) (Condition, bool, error) {
	if len(lines) == 0 {
		return Condition{}, false, nil
	}
	var c Condition
	v := strings.Join(lines, ",")
	if strings.Trim(v, " \t") == "*" {
		return Condition{Any: true}, true, nil
	}
	for {
		v = strings.TrimLeft(v, " \t,") // empty list elements are allowed
		if v == "" {
			break
		}
		t, rest, err := nextTag(v)
		if err != nil {
			return Condition{}, true, err
		}
		if len(c.Tags) == maxTags {
			return Condition{}, true, fmt.Errorf("%w: more than %d entity tags", ErrBadCondition, maxTags)
		}
		c.Tags = append(c.Tags, t)
		rest = strings.TrimLeft(rest, " \t")
		if rest != "" && rest[0] != ',' {
			return Condition{}, true, fmt.Errorf("%w: expected a comma after %s", ErrBadCondition, t)
		}
		v = rest
	}
	if len(c.Tags) == 0 {
		return Condition{}, true, fmt.Errorf("%w: no entity tag", ErrBadCondition)
	}
	return c, true, nil
}

// nextTag parses one entity-tag at the start of s: [W/] DQUOTE *etagc DQUOTE, where etagc is
// %x21 / %x23-7E / obs-text.
func nextTag(s string) (Tag, string, error) {
	var t Tag
	if strings.HasPrefix(s, "W/") {
		t.Weak = true
		s = s[2:]
	}
	if s == "" || s[0] != '"' {
		return t, "", fmt.Errorf("%w: an entity tag must be quoted", ErrBadCondition)
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			t.Opaque = s[1:i]
			return t, s[i+1:], nil
		case c == 0x21 || c >= 0x23 && c <= 0x7e || c >= 0x80:
		default:
			return t, "", fmt.Errorf("%w: character %q in an entity tag", ErrBadCondition, c)
		}
	}
	return t, "", fmt.Errorf("%w: unterminated entity tag", ErrBadCondition)
}
