package store_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus/natsbus"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// leakShape is a DSN or bus URL the library may print, with {pw} where the password goes.
type leakShape struct {
	name string
	tmpl string
	enc  func(pw string) string // how the password is written: as it is, or escaped
	skip func(pw string) bool   // passwords this shape cannot hold unambiguously
	nats bool                   // a bus URL, not a DSN
}

func (s leakShape) fill(pw string) string { return strings.ReplaceAll(s.tmpl, "{pw}", s.enc(pw)) }

func asIs(pw string) string { return pw }

func userinfo(pw string) string { return url.UserPassword("me", pw).String() }

// kvQuote writes pw as a quoted keyword/value value.
func kvQuote(pw string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "'"
}

func hasSpace(pw string) bool { return strings.ContainsAny(pw, " \t\n\r\v\f") }

// spellsURL: in a NATS list "nats://u:1234,nats://x@h" is two URLs, whatever the user
// meant; no reader can tell a password holding "://" from a list.
func spellsURL(pw string) bool { return strings.Contains(pw, "://") }

func leakShapes(dir string) []leakShape {
	return []leakShape{
		{name: "postgres user info", tmpl: "postgres://me:{pw}@127.0.0.1:1/db?connect_timeout=1", enc: asIs},
		{name: "postgres user info, escaped", tmpl: "postgres://{pw}@127.0.0.1:1/db", enc: userinfo},
		{name: "postgres query", tmpl: "postgres://me@127.0.0.1:1/db?sslmode=disable&password={pw}&application_name=shop", enc: asIs},
		{name: "postgres query, escaped", tmpl: "postgres://me@127.0.0.1:1/db?password={pw}&sslmode=disable", enc: url.QueryEscape},
		{name: "postgres second password", tmpl: "postgres://me@127.0.0.1:1/db?password=first&password={pw}", enc: asIs},
		{name: "keyword/value, quoted", tmpl: "host=127.0.0.1 port=1 user=me password={pw} dbname=db connect_timeout=1", enc: kvQuote},
		{name: "keyword/value", tmpl: "host=127.0.0.1 port=1 user=me password={pw} dbname=db", enc: asIs, skip: hasSpace},
		{name: "keyword/value sslpassword", tmpl: "host=127.0.0.1 port=1 sslpassword={pw} dbname=db", enc: kvQuote},
		{name: "sqlite query", tmpl: "sqlite:" + dir + "/x.db?password={pw}", enc: asIs},
		{name: "nats user info", tmpl: "nats://me:{pw}@127.0.0.1:1", enc: asIs, skip: spellsURL, nats: true},
		{name: "nats user info, escaped", tmpl: "nats://{pw}@127.0.0.1:1", enc: userinfo, nats: true},
		{name: "nats token", tmpl: "nats://{pw}@127.0.0.1:1", enc: asIs, skip: spellsURL, nats: true},
		{name: "nats list", tmpl: "nats://a:{pw}@127.0.0.1:1, nats://b:{pw}@127.0.0.1:2", enc: asIs, skip: spellsURL, nats: true},
		{name: "nats list, escaped", tmpl: "nats://{pw}@127.0.0.1:1,nats://{pw}@127.0.0.1:2", enc: userinfo, nats: true},
	}
}

// printed is everything the library prints about dsn when it is used and fails: Redact,
// ParseDSN's error, store.Open's and twice.Open's errors and log lines, and for a bus URL
// natsbus.New's error and log lines and twice.Open's error for it.
func printed(t *testing.T, sh leakShape, dsn, missingDir string) string {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &out}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	note := func(err error) {
		if err != nil {
			out.WriteString(err.Error() + "\n")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out.WriteString(store.Redact(dsn) + "\n")
	if sh.nats {
		b, err := natsbus.New(ctx, natsbus.Config{URL: dsn, Service: "svc", Instance: "i1", Logger: log})
		if err == nil {
			_ = b.Close(ctx)
			t.Fatalf("natsbus.New(%q) connected", dsn)
		}
		note(err)
		// Open checks Bus first, then fails on the missing directory.
		_, err = twice.Open(ctx, twice.Config{DSN: "sqlite:" + missingDir + "/x.db", Name: "svc", Bus: dsn, Logger: log})
		note(err)
		return out.String()
	}
	_, err := store.ParseDSN(dsn)
	note(err)
	s, err := store.Open(ctx, dsn, &store.Options{ConnectTimeout: 3 * time.Second, Logger: log})
	if err == nil {
		s.Close()
		t.Fatalf("Open(%q) succeeded", dsn)
	}
	note(err)
	_, err = twice.Open(ctx, twice.Config{DSN: dsn, Name: "svc", Logger: log})
	note(err)
	return out.String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// neutral changes every letter and digit of pw and keeps everything else, so the DSN keeps
// its shape: whatever of pw's runs also shows in what is printed for neutral(pw) is the
// library's own text ("password", "xxxxx", "connect"), not a leak.
func neutral(pw string) string {
	b := []byte(pw)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'f':
			b[i] = 'a' + (c-'a'+3)%6 // hex digits stay hex digits
		case c >= 'A' && c <= 'F':
			b[i] = 'A' + (c-'A'+3)%6
		case c >= 'g' && c <= 'z':
			b[i] = 'g' + (c-'g'+10)%20
		case c >= 'G' && c <= 'Z':
			b[i] = 'G' + (c-'G'+10)%20
		case c >= '1' && c <= '9': // '0' stays, so %00 stays %00
			b[i] = '1' + (c-'1'+4)%9
		}
	}
	return string(b)
}

// leakedRun returns a run of 4 bytes of secret that shows in out but not in known.
func leakedRun(secret, out, known string) (string, bool) {
	for i := 0; i+4 <= len(secret); i++ {
		if r := secret[i : i+4]; strings.Contains(out, r) && !strings.Contains(known, r) {
			return r, true
		}
	}
	return "", false
}

// FuzzRedactNoLeak: for a password of 8 or more bytes, in every shape of DSN and bus URL the
// library prints, no run of 4 bytes of the password (or of the password as written in the
// DSN) that the shape does not itself contain shows in Redact, in ParseDSN's error, in
// store.Open's or twice.Open's error or log lines, or in natsbus.New's error or log lines.
func FuzzRedactNoLeak(f *testing.F) {
	for _, pw := range []string{
		"S3cr/et?#pw", `Hunter2"quoted\back`, "ab&cd#ef&sslmode=x", "p@ss@word1", "1234,5678,90ab",
		"correct horse battery", "'quoted' and more", "%zz%00%41%2F", "ab:cd:ef:gh", "x=1&password=2",
		`\'"\'"\'"`, "pw=with=equals", "trailing\\", "12345678", "a,nats:/x@y", "sslmode=disable",
		"/.//?//#//", "h2:4222,h3", "passwordpassword", "xxxxxxxxxxxx",
	} {
		f.Add(pw)
	}
	dir := f.TempDir()
	missing := filepath.Join(dir, "missing")
	shapes := leakShapes(dir)
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 8 {
			return
		}
		other := neutral(pw)
		for _, sh := range shapes {
			if sh.skip != nil && sh.skip(pw) {
				continue
			}
			dsn := sh.fill(pw)
			got := printed(t, sh, dsn, missing)
			known := strings.ReplaceAll(sh.tmpl, "{pw}", "\x00") + "\x00" + printed(t, sh, sh.fill(other), missing)
			for _, secret := range []string{pw, sh.enc(pw)} {
				if run, ok := leakedRun(secret, got, known); ok {
					t.Fatalf("%s: %q of the password shows in what is printed for %q:\n%s", sh.name, run, dsn, got)
				}
			}
		}
	})
}

// A SQLite file in a directory that does not exist: Open says so, naming the directory (and
// where a relative one resolves to), and does not call the DSN bad.
func TestOpenMissingDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dsn, want := range map[string]string{
		"sqlite:" + dir + "/missing/x.db":  "the directory " + dir + "/missing does not exist",
		"sqlite:./no-such-dir-h9/twice.db": "the directory no-such-dir-h9 (" + filepath.Join(wd, "no-such-dir-h9") + ", from the working directory) does not exist",
	} {
		if _, err := store.ParseDSN(dsn); err != nil {
			t.Errorf("ParseDSN(%q): %v", dsn, err)
		}
		_, err := store.Open(context.Background(), dsn, nil)
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, fs.ErrNotExist) || errors.Is(err, store.ErrBadDSN) {
			t.Errorf("Open(%q) = %v; want an error saying %q", dsn, err, want)
		}
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(context.Background(), "sqlite:"+file+"/x.db", nil); err == nil || !strings.Contains(err.Error(), file+" is not a directory") {
		t.Errorf("Open under a file: %v", err)
	}
}

func TestKeywordValueDSN(t *testing.T) {
	t.Parallel()
	const dsn = "host=db.internal port=5433 dbname=shop user=app password='a s3cret\\'s' sslmode=disable"
	d, err := store.ParseDSN(dsn)
	if err != nil || d.Dialect != store.Postgres {
		t.Fatalf("ParseDSN: %+v, %v", d, err)
	}
	if got, want := d.String(), "host=db.internal port=5433 dbname=shop user=app password=xxxxx sslmode=disable"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	// A real connection in the keyword form, to the server of the PostgreSQL suites.
	db := testdb.New(t, store.Postgres)
	u, err := url.Parse(testdb.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	kv := "host=" + u.Hostname() + " port=" + u.Port() + " dbname=" + strings.TrimPrefix(u.Path, "/") + " user=" + u.User.Username() + " sslmode=disable"
	if p, ok := u.User.Password(); ok {
		kv += " password=" + kvQuote(p)
	}
	s, err := store.Open(context.Background(), kv, &store.Options{Schema: db.Schema})
	if err != nil {
		t.Fatalf("Open(%s): %v", store.Redact(kv), err)
	}
	defer s.Close()
	var one int
	if err := s.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 || s.Schema() != db.Schema {
		t.Fatalf("SELECT 1 = %d, %v; schema %q", one, err, s.Schema())
	}
}
