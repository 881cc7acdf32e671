package redact

import "strings"

// spaces are the characters libpq and pgx skip between keyword/value pairs.
const spaces = " \t\n\r\v\f"

// Pair is one keyword=value of a keyword/value DSN.
type Pair struct {
	Key string
	// Raw is the value as written: quotes and backslashes included.
	Raw string
}

// Keywords reads a libpq keyword/value string the way pgx does: pairs separated by spaces, a
// value quoted with '…' when it holds spaces, '\' escaping the next character. Where it
// cannot read on it stops: rest is the unread text from there, and problem says what is
// wrong there without repeating any of the input (it may be part of a password).
func Keywords(s string) (pairs []Pair, rest, problem string) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, s, "it holds a NUL byte"
	}
	const noEquals = "a word without '=' after it (quote a value that holds spaces: password='…')"
	rest = strings.TrimLeft(s, spaces)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return pairs, rest, noEquals
		}
		key := strings.Trim(rest[:eq], spaces)
		if key == "" {
			return pairs, rest, "a '=' without a keyword before it"
		}
		if strings.ContainsAny(key, spaces) {
			return pairs, rest, noEquals
		}
		v := strings.TrimLeft(rest[eq+1:], spaces)
		n, ok := valueEnd(v)
		if !ok {
			return pairs, rest, "a quoted value without its closing quote"
		}
		pairs = append(pairs, Pair{Key: key, Raw: v[:n]})
		rest = strings.TrimLeft(v[n:], spaces)
	}
	return pairs, "", ""
}

// valueEnd returns the length of the value v starts with, closing quote included; false for
// a quoted value that never closes.
func valueEnd(v string) (int, bool) {
	if v == "" || v[0] != '\'' {
		end := 0
		for end < len(v) && strings.IndexByte(spaces, v[end]) < 0 {
			if v[end] == '\\' {
				end++
				if end == len(v) {
					break
				}
			}
			end++
		}
		return end, true
	}
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\'':
			return i + 1, true
		case '\\':
			i++
		}
	}
	return 0, false
}

// keywordValue masks the values of secret keywords, and everything from where the string
// stops being readable, since a password with an unquoted space continues there.
func keywordValue(s string) (string, []string) {
	pairs, rest, _ := Keywords(s)
	var out, secrets []string
	for _, p := range pairs {
		if IsSecretKey(p.Key) {
			out = append(out, p.Key+"="+Mask)
			secrets = append(secrets, p.Raw)
		} else {
			out = append(out, p.Key+"="+p.Raw)
		}
	}
	if rest != "" {
		out = append(out, Mask)
		secrets = append(secrets, rest)
	}
	return strings.Join(out, " "), secrets
}
