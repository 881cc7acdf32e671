package store

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DSN is a parsed data source name. Both forms name the database every instance of a
// service shares:
//
//	sqlite:./twice.db                  a file next to the binary (the embedded default)
//	sqlite:/var/lib/shop/twice.db?synchronous=full&busy_timeout=10000
//	postgres://user:pass@host:5432/db?pool_max_conns=20&search_path=shop
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

// ParseDSN parses dsn without touching the database. Errors name the DSN with its password
// masked.
func ParseDSN(dsn string) (DSN, error) {
	d := DSN{Raw: dsn}
	bad := func(format string, args ...any) (DSN, error) {
		return DSN{}, fmt.Errorf("%w %q: %s", ErrBadDSN, Redact(dsn), fmt.Sprintf(format, args...))
	}
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok || dsn == "" {
		return bad("want sqlite:PATH or postgres://USER@HOST/DB")
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
			return bad("bad query string: %v", err)
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
		dir := filepath.Dir(d.Path)
		if st, err := os.Stat(dir); err != nil {
			return bad("directory %s does not exist", dir)
		} else if !st.IsDir() {
			return bad("%s is not a directory", dir)
		}
		return d, nil
	case "postgres", "postgresql":
		d.Dialect = Postgres
		if _, err := url.Parse(dsn); err != nil {
			return bad("not a URL: %v", redactErr(err, dsn))
		}
		return d, nil
	default:
		return bad("unknown scheme %q: want sqlite:PATH or postgres://USER@HOST/DB", scheme)
	}
}

// String returns the DSN with any password masked.
func (d DSN) String() string { return Redact(d.Raw) }

// Redact masks the password of a DSN so it can be logged or printed in an error.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		if i := strings.Index(dsn, "@"); i > 0 {
			if j := strings.Index(dsn, "://"); j >= 0 && j < i {
				if k := strings.Index(dsn[j+3:i], ":"); k >= 0 {
					return dsn[:j+3+k+1] + "xxxxx" + dsn[i:]
				}
			}
		}
		return maskQueryPassword(dsn)
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return maskQueryPassword(u.String())
}

// maskQueryPassword hides password=… in a query string, which libpq-style URLs allow.
func maskQueryPassword(s string) string {
	i := strings.Index(s, "password=")
	if i < 0 {
		return s
	}
	j := strings.IndexAny(s[i:], "&#")
	if j < 0 {
		return s[:i] + "password=xxxxx"
	}
	return s[:i] + "password=xxxxx" + s[i+j:]
}

// redactErr returns err's text with the raw DSN replaced by its redacted form, since
// url.Parse and pgx quote their input.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return strings.ReplaceAll(msg, dsn, Redact(dsn))
}
