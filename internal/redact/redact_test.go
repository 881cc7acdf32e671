package redact

import (
	"errors"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		// PostgreSQL URLs: the user stays, the password goes, whatever it holds.
		"postgres://u:secret@h/db":                   "postgres://u:xxxxx@h/db",
		"postgres://u@h/db":                          "postgres://u@h/db",
		"postgresql://h:5432/db?sslmode=disable":     "postgresql://h:5432/db?sslmode=disable",
		"postgres://u:se/cr?et#x@h:5432/db":          "postgres://u:xxxxx@h:5432/db",
		"postgres://u:S3cr/et@h:5432/db":             "postgres://u:xxxxx@h:5432/db",
		`postgres://u:a"b\c@h/db`:                    "postgres://u:xxxxx@h/db",
		"postgres://u:p@ss@h/db":                     "postgres://u:xxxxx@h/db",
		"postgres://u:a,b@h1:5432,h2:5433/db":        "postgres://u:xxxxx@h1:5432,h2:5433/db",
		"postgres://h/db?sslmode=disable&password=s": "postgres://h/db?sslmode=disable&password=xxxxx",
		// Everything after a query password: an unescaped '&' or '#' may be inside it, and a
		// second password= is covered too.
		"postgres://h/db?password=ab&cd#ef&sslmode=x":   "postgres://h/db?password=xxxxx",
		"postgres://h/db?password=a&password=b":         "postgres://h/db?password=xxxxx",
		"postgres://h/db?pass%77ord=a":                  "postgres://h/db?pass%77ord=xxxxx",
		"postgres://h/db?sslpassword=a&sslmode=require": "postgres://h/db?sslpassword=xxxxx",
		// libpq keyword/value.
		"host=h user=u password=secret dbname=d":          "host=h user=u password=xxxxx dbname=d",
		`host=h password='se cr\'et' dbname=d`:            "host=h password=xxxxx dbname=d",
		"host=h password=se cret dbname=d":                "host=h password=xxxxx xxxxx",
		"host=h password='unterminated dbname=d":          "host=h xxxxx",
		"  host = h  sslpassword = k  application_name=a": "host=h sslpassword=xxxxx application_name=a",
		// SQLite: no user info, whatever the path holds.
		"sqlite:./twice.db":                  "sqlite:./twice.db",
		"sqlite:/data/a@b/twice.db":          "sqlite:/data/a@b/twice.db",
		"sqlite:./x.db?password=p&synchr=no": "sqlite:./x.db?password=xxxxx",
		// NATS: user:password, token, lists.
		"nats://127.0.0.1:4222":                  "nats://127.0.0.1:4222",
		"nats://u:p@h:4222":                      "nats://xxxxx@h:4222",
		"nats://tok3n@h:4222":                    "nats://xxxxx@h:4222",
		"nats://a:p@h1:4222, nats://b:q@h2:4222": "nats://xxxxx@h1:4222, nats://xxxxx@h2:4222",
		"nats://h1:4222,nats://h2:4222":          "nats://h1:4222,nats://h2:4222",
		"nats://u:12,34@h":                       "nats://xxxxx@h",
		"nats://u:1234,nats://cd@h":              "nats://xxxxx@h",
		"nats://h1,nats://u:p@h2":                "nats://xxxxx@h2",
		"tls://u:p/q@h":                          "tls://xxxxx@h",
		"u:1234,cd@h":                            "xxxxx@h",
		"https://h/x?token=abc&y=1":              "https://h/x?token=xxxxx",
		"":                                       "",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKeywords(t *testing.T) {
	t.Parallel()
	pairs, rest, problem := Keywords(`host=h  port = 5432 password='a b\'c' user=x\ y`)
	if rest != "" || problem != "" || len(pairs) != 4 || pairs[2].Raw != `'a b\'c'` || pairs[3].Raw != `x\ y` {
		t.Fatalf("pairs %q, rest %q, problem %q", pairs, rest, problem)
	}
	for _, s := range []string{"host=h dbname", "host=h pass word=x", "password='x", "=x", "a=b\x00"} {
		if _, rest, problem := Keywords(s); rest == "" || problem == "" {
			t.Errorf("Keywords(%q) read it all", s)
		}
	}
}

func TestText(t *testing.T) {
	t.Parallel()
	dsn := `postgres://me:Hunter2"Pass@db.example/shop`
	for _, msg := range []string{
		`cannot parse "postgres://me:Hunter2\"Pass@db.example/shop"`,
		"dial db.example: user me password Hunter2\"Pass rejected",
		"invalid port \":Hunter2\" after host",
	} {
		got := Text(msg, dsn)
		if strings.Contains(got, "Hunt") || strings.Contains(got, "Pass") {
			t.Errorf("Text(%q) = %q", msg, got)
		}
	}
	if got := Text("connection refused", dsn); got != "connection refused" {
		t.Errorf("Text changed an innocent message: %q", got)
	}
	base := errors.New("dial: Hunter2 refused")
	err := Error(base, dsn)
	if !errors.Is(err, base) || strings.Contains(err.Error(), "Hunter2") {
		t.Errorf("Error: %v", err)
	}
}
