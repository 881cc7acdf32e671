package redact

import (
	"net/url"
	"strconv"
	"strings"
)

// minRun is the shortest run of a secret that Text masks; shorter runs would mask ordinary
// words.
const minRun = 4

// Text returns msg, text that other code (a driver, a client library) built from s, with s
// replaced by its masked form and every run of at least 4 characters of any of s's secrets
// masked, in the spellings a library may print: as written, percent-decoded, unescaped, or
// quoted with %q. It is a second line of defence: twice never puts a parser's error text in
// its own errors, and checks DSNs so that what a driver reads as the host or database is not
// part of a password.
func Text(msg, s string) string {
	masked, secrets := scan(s)
	if s != "" {
		msg = strings.ReplaceAll(msg, s, masked)
	}
	var variants []string
	for _, sec := range secrets {
		for _, v := range []string{sec, decode(sec), unescape(sec), strings.Trim(sec, "'"),
			url.QueryEscape(sec), url.PathEscape(sec), strconv.Quote(sec)} {
			if len(v) >= 3 {
				variants = append(variants, strings.Trim(v, `"`))
			}
		}
	}
	if len(variants) == 0 {
		return msg
	}
	var b strings.Builder
	for i := 0; i < len(msg); {
		if n := longestRun(msg[i:], variants); n > 0 {
			b.WriteString(Mask)
			i += n
			continue
		}
		b.WriteByte(msg[i])
		i++
	}
	return b.String()
}

// longestRun returns the length of the longest prefix of s that occurs in one of variants
// and is long enough to mask, or 0.
func longestRun(s string, variants []string) int {
	best := 0
	for _, v := range variants {
		min := min(minRun, len(v))
		if len(s) < min || !strings.Contains(v, s[:min]) {
			continue
		}
		n := min
		for n < len(s) && n < len(v) && strings.Contains(v, s[:n+1]) {
			n++
		}
		best = max(best, n)
	}
	return best
}

// unescape drops the backslashes of a keyword/value value.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				break
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Error returns err with its text passed through [Text] for s; errors.Is and errors.As still
// reach err. It returns nil for nil.
func Error(err error, s string) error {
	if err == nil {
		return nil
	}
	return &redacted{msg: Text(err.Error(), s), err: err}
}

type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }
