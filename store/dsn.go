package store

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twicehq/twice/internal/redact"
)

// DSN is a parsed data source name. Every form names the database all instances of a
// service share:
//
//	sqlite:./twice.db                  a file next to the binary (the embedded default)
//	sqlite:/var/lib/shop/twice.db?synchronous=full&busy_timeout=10000
//	postgres://user:pass@host:5432/db?pool_max_conns=20&search_path=shop
//	host=db port=5432 dbname=shop user=app password='a secret'   (libpq keyword/value)
type DSN struct {
	Dialect Dialect
	// Raw is the DSN as given. It may hold a password: print [DSN.String] instead.
	Raw string
	// Path is the SQLite file, cleaned. Empty for PostgreSQL.
	Path string
	// Synchronous is the SQLite synchronous pragma: "normal" (the default: a process crash
	// loses nothing, a power cut may lose the last commits) or "full".
	Synchronous string
	// BusyTimeout is how long SQLite waits for another process's write lock.
	BusyTimeout time.Duration
}

// DefaultDSN is the embedded default: a SQLite file in the working directory, shared by every
// local instance started there.
const DefaultDSN = "sqlite:./twice.db"

// DefaultBusyTimeout is how long a SQLite write waits for another process by default.
const DefaultBusyTimeout = 10 * time.Second

// ErrBadDSN is returned, wrapped with the reason, for a DSN that cannot be used.
var ErrBadDSN = errors.New("store: bad DSN")

// ParseDSN parses dsn without touching the database. PostgreSQL takes a URL or the libpq
// keyword/value form ("host=db dbname=shop user=app password=…"). Errors name the DSN with
// its secrets masked, and say what is wrong without repeating the input.
func ParseDSN(dsn string) (DSN, error) {
	d := DSN{Raw: dsn}
	bad := func(format string, args ...any) (DSN, error) {
		return DSN{}, fmt.Errorf("%w %q: %s", ErrBadDSN, Redact(dsn), fmt.Sprintf(format, args...))
	}
	if redact.IsKeywordValue(dsn) {
		if _, _, problem := redact.Keywords(dsn); problem != "" {
			return bad("PostgreSQL keyword/value form: %s", problem)
		}
		d.Dialect = Postgres
		return d, nil
	}
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok || dsn == "" {
		return bad("want sqlite:PATH, postgres://USER@HOST/DB or host=HOST dbname=DB …")
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		d.Dialect = SQLite
		rest = strings.TrimPrefix(rest, "//")
		path, query, _ := strings.Cut(rest, "?")
		if path == "" {
			return bad("no file path after sqlite:")
		}
		if path == ":memory:" || strings.Contains(path, "mode=memory") {
			return bad("an in-memory database cannot be shared by several instances; use a file path")
		}
		d.Path = filepath.Clean(path)
		d.Synchronous = "normal"
		d.BusyTimeout = DefaultBusyTimeout
		params, err := url.ParseQuery(query)
		if err != nil {
			return bad("the query string has a bad %%-escape or a ';'")
		}
		// Only now may parameters be named in errors: none of them is a secret.
		for k := range params {
			if redact.IsSecretKey(k) {
				return bad("a SQLite DSN takes no password, key or token")
			}
		}
		for k, vs := range params {
			v := vs[len(vs)-1]
			switch k {
			case "synchronous":
				v = strings.ToLower(v)
				if v != "normal" && v != "full" {
					return bad("synchronous must be normal or full, not %q", v)
				}
				d.Synchronous = v
			case "busy_timeout":
				ms, err := strconv.Atoi(v)
				if err != nil || ms < 0 {
					return bad("busy_timeout must be milliseconds, not %q", v)
				}
				d.BusyTimeout = time.Duration(ms) * time.Millisecond
			default:
				return bad("unknown parameter %q (known: synchronous, busy_timeout)", k)
			}
		}
		return d, nil
	case "postgres", "postgresql":
		d.Dialect = Postgres
		if problem := checkPostgresURL(dsn[len(scheme)+1:]); problem != "" {
			return bad("%s", problem)
		}
		return d, nil
	default:
		// The scheme is named only when it looks like one, not like "token@host".
		if !plainScheme.MatchString(scheme) {
			scheme = "?"
		}
		return bad("unknown scheme %q: want sqlite:PATH, postgres://USER@HOST/DB or host=HOST dbname=DB …", scheme)
	}
}

var plainScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]{0,15}$`)

// checkPostgresURL checks the part of a PostgreSQL URL after "postgres:" the way pgx reads
// it (libpq's rules), and refuses what pgx would read differently from [Redact]: there, a
// password holding an unescaped '@' or '/' would leave part of it in the host or database
// name, which error messages show. It returns what is wrong, without repeating the input.
func checkPostgresURL(rest string) string {
	p, ok := strings.CutPrefix(rest, "//")
	switch {
	case !ok:
		return "want postgres://[USER[:PASSWORD]@]HOST[:PORT][/DB][?PARAM=VALUE&…]"
	case strings.IndexByte(p, 0) >= 0:
		return "it holds a NUL byte"
	}
	// pgx takes user info up to the first '@' before any '/'; any other '@' would be read
	// differently by pgx and by a reader, so it must be escaped.
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		user, password, _ := strings.Cut(p[:i], ":")
		if !validURIPart(user) {
			return "the user name has a bad %-escape or a space"
		}
		if !validURIPart(password) {
			return "the password has a bad %-escape or a space; percent-encode it (a space as %20)"
		}
		p = p[i+1:]
	}
	if strings.Contains(p, "@") {
		return "an '@' after the user info: percent-encode '@' (%40), '/' (%2F) and ':' (%3A) in a password"
	}
	if _, query, ok := strings.Cut(p, "?"); ok && query != "" {
		for pair := range strings.SplitSeq(query, "&") {
			k, v, ok := strings.Cut(pair, "=")
			if !ok || strings.Contains(v, "=") {
				return "each query parameter takes exactly one '=': percent-encode '&' (%26), '=' (%3D) and '#' (%23) in values"
			}
			if !validURIPart(k) || !validURIPart(v) {
				return "a query parameter has a bad %-escape or a space"
			}
		}
	}
	return ""
}

// validURIPart reports whether libpq can decode s: every '%' starts two hex digits other
// than 00, and spaces appear only at the ends.
func validURIPart(s string) bool {
	if strings.Contains(strings.Trim(s, " "), " ") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) || s[i+1:i+3] == "00" {
			return false
		}
		i += 2
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// String returns the DSN with its secrets masked.
func (d DSN) String() string { return Redact(d.Raw) }

// Redact masks the secrets of a DSN or URL so it can be logged or printed in an error: the
// password (or token) in a URL's user info, secret query parameters (password, sslpassword,
// token, …) and secret keywords of the keyword/value form. It works on the raw text, so it
// masks malformed input too, more rather than less. It is the one redactor twice uses for
// every DSN and bus URL it prints.
func Redact(dsn string) string { return redact.String(dsn) }
