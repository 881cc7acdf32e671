// Package redact masks the secrets of the DSNs and URLs twice prints: PostgreSQL URLs and
// libpq keyword/value strings, SQLite DSNs, NATS URLs and comma-separated lists of them, and
// any URL with user:password@ or token@. It reads the raw text and never needs it to parse:
// where the text is malformed or ambiguous it masks more, never less, because a password
// with an unescaped '@', '/', '?', '#', ',' or '&' is exactly the input that does not parse.
package redact

import (
	"regexp"
	"strings"
)

// Mask replaces every secret.
const Mask = "xxxxx"

// String returns s with every secret masked: the password of a PostgreSQL URL's user info,
// all of the user info of other URLs (a NATS token may hold a ':'), the value of a secret
// keyword of a keyword/value DSN, and everything from the first secret query parameter
// (password, sslpassword, token, …) to the end, since an unescaped '&' or '#' could be
// inside it.
func String(s string) string {
	out, _ := scan(s)
	return out
}

// scan returns s masked and the raw spans of s it masked.
func scan(s string) (string, []string) {
	if IsKeywordValue(s) {
		return keywordValue(s)
	}
	scheme := schemeOf(s)
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3", "file":
		// No user info: the path may hold an '@'.
		return params(s)
	case "postgres", "postgresql":
		if rest := s[len(scheme)+1:]; strings.HasPrefix(rest, "//") {
			return userinfo(s, len(scheme)+3, userName)
		}
	}
	return urlList(s)
}

// IsKeywordValue reports whether s is in the libpq keyword/value form
// ("host=db user=app password=…"): its first word is followed by '='.
func IsKeywordValue(s string) bool {
	s = strings.TrimLeft(s, spaces)
	i := strings.IndexAny(s, "=:/@"+spaces)
	if i < 0 {
		return false
	}
	return strings.HasPrefix(strings.TrimLeft(s[i:], spaces), "=")
}

var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

// schemeOf returns s's URL scheme, without the colon, or "".
func schemeOf(s string) string {
	m := schemeRE.FindString(s)
	return strings.TrimSuffix(m, ":")
}

// How [userinfo] treats user info.
type userMode int

const (
	// userName shows the user name before the first ':', and user info without ':' (PostgreSQL).
	userName userMode = iota
	// userNone shows nothing: a NATS token may hold a ':', and a user name is little help.
	userNone
)

// userinfo masks the user info of the URL s whose authority starts at start: everything up
// to the last '@'. A parser's own reading may stop earlier; the last '@' is the widest
// reading, so a password holding '@', '/', '?' or '#' is masked whole.
func userinfo(s string, start int, mode userMode) (string, []string) {
	at := strings.LastIndexByte(s[start:], '@')
	if at < 0 {
		return params(s)
	}
	at += start
	if p := secretAt(s); p >= 0 && p <= at {
		// A secret parameter before the last '@': either a query password holding an '@',
		// or user info holding "password=". Both end who knows where.
		return s[:start] + Mask, []string{s[start:]}
	}
	var b strings.Builder
	var secrets []string
	b.WriteString(s[:start])
	region := s[start:at]
	user, pass, hasPass := strings.Cut(region, ":")
	switch {
	case mode == userName && hasPass:
		b.WriteString(user + ":" + Mask)
		secrets = append(secrets, pass)
	case mode == userName:
		b.WriteString(region)
	default:
		b.WriteString(Mask)
		secrets = append(secrets, region)
	}
	tail, more := params(s[at:])
	b.WriteString(tail)
	return b.String(), append(secrets, more...)
}

// strictElem is one element of a URL list whose user info cannot be misread: at most one
// '@', no '/', '?', '#' or space before it, and a plain host and port after it.
var strictElem = regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#\s]*@)?(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%-]+)(?::[0-9]{0,5})?(?:[/?][^@]*)?$`)

// urlList masks a URL or a comma-separated list of them (NATS). Each element's user info is
// masked on its own only when the split cannot be misread: every element is strict and has
// a scheme and user info. Otherwise a ',' may be inside a password, and everything from the
// first "://" to the last '@' is masked.
func urlList(s string) (string, []string) {
	if !strings.Contains(s, "@") {
		return params(s)
	}
	elems := strings.Split(s, ",")
	strict := true
	var n, schemes, ats int
	for _, e := range elems {
		t := strings.TrimSpace(e)
		if t == "" {
			continue
		}
		n++
		if !strictElem.MatchString(t) {
			strict = false
			break
		}
		if strings.Contains(t, "://") {
			schemes++
		}
		if strings.Contains(t, "@") {
			ats++
		}
	}
	if !strict || schemes != n || ats != n {
		start := strings.Index(s, "://")
		if start < 0 || start > strings.LastIndexByte(s, '@') {
			start = 0
		} else {
			start += 3
		}
		return userinfo(s, start, userNone)
	}
	var b strings.Builder
	var secrets []string
	for i, e := range elems {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.TrimSpace(e) == "" {
			b.WriteString(e)
			continue
		}
		out, sec := userinfo(e, strings.Index(e, "://")+3, userNone)
		b.WriteString(out)
		secrets = append(secrets, sec...)
	}
	return b.String(), secrets
}

// params masks everything after the '=' of the first secret parameter in s to the end.
func params(s string) (string, []string) {
	if p := secretAt(s); p >= 0 {
		return s[:p] + Mask, []string{s[p:]}
	}
	return s, nil
}

// secretAt returns where the value of the first secret parameter of s starts, or -1.
func secretAt(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			continue
		}
		j := i
		for j > 0 && isKeyChar(s[j-1]) {
			j--
		}
		if j < i && i+1 < len(s) && IsSecretKey(decode(s[j:i])) {
			return i + 1
		}
	}
	return -1
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-.%~+", c) >= 0
}

// secretWords are the parts of a parameter name that mark its value secret.
var secretWords = []string{"pass", "pwd", "secret", "token", "key", "auth", "cred", "jwt", "sig", "private"}

// IsSecretKey reports whether a parameter or keyword named k holds a secret: password,
// sslpassword, passfile, token, nkey, sslkey, secret, credentials, jwt, signature and the like.
func IsSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// decode percent-decodes s leniently: a bad escape is kept as it is.
func decode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, ok := unhex(s[i+1]); ok {
				if lo, ok := unhex(s[i+2]); ok {
					b.WriteByte(hi<<4 | lo)
					i += 2
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
