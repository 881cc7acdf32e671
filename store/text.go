package store

import (
	"strings"
	"unicode/utf8"
)

// Text returns s as a text column keeps it on both stores: invalid UTF-8 replaced by
// U+FFFD and NUL bytes removed, both of which PostgreSQL refuses (the whole statement
// fails, and with it whatever else it writes), and, when max > 0, cut to at most max
// bytes at a character boundary. Every text that comes from outside twice's own code
// and is written by a statement, an error's message above all, goes through it: a
// worker's error with a stray byte must not fail the statement that records a batch of
// outcomes.
func Text(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if max <= 0 || len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// MaxErrorText is the most bytes of an error's message the blocks keep in the database (a
// job's last error, a dead letter's, a workflow step's): enough for a message and a short
// stack, and no row grows without bound from one failure.
const MaxErrorText = 4000

// ErrorText is err's message as the blocks keep it: [Text] at most [MaxErrorText] bytes.
func ErrorText(err error) string { return Text(err.Error(), MaxErrorText) }
