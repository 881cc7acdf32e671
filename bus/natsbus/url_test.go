package natsbus_test

import (
	"context"
	"strings"
	"testing"

	"github.com/twicehq/twice/bus/natsbus"
)

func TestCheckURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"nats://127.0.0.1:4222", "nats://h1:4222, nats://h2:4222", "tls://u:p%40ss@h", "ws://h:8080/nats", "nats://t0ken@h",
	} {
		if err := natsbus.CheckURL(ok); err != nil {
			t.Errorf("CheckURL(%q): %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"":                                "no URL",
		"127.0.0.1:4222":                  "URL 1 of the list: no scheme",
		"nats://h1,redis://Hunter2x@h2":   "URL 2 of the list: the scheme must be nats",
		"nats://u:Hunter2/x@h":            "not a URL",
		"nats://u:Hunter2@x@h":            "an '@' that does not end the user info",
		"nats://h/Hunter2@x":              "an '@' that does not end the user info",
		"nats://u:Hunter2%zz@h":           "not a URL",
		"nats://u:Hunter2,nats://x@h":     "URL 1 of the list: not a URL",
		"nats:///Hunter2":                 "no host",
		"nats://u:12,34@h":                "URL 2 of the list: no scheme",
		"nats://u:Hunter2#frag@127.0.0.1": "not a URL",
	} {
		err := natsbus.CheckURL(bad)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("CheckURL(%q) = %v, want an error with %q and no password", bad, err, want)
		}
	}
}

// New refuses a URL it would print or connect to wrongly, and its connection error shows
// the URL with the credentials masked.
func TestNewHidesCredentials(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, u := range []string{"nats://me:Hunter2x@127.0.0.1:1", "nats://Hunter2x@127.0.0.1:1", "nats://me:Hunter2/x@127.0.0.1:1"} {
		_, err := natsbus.New(ctx, natsbus.Config{URL: u, Service: "svc", Instance: "i1"})
		if err == nil || strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("New(%q): %v", u, err)
		}
	}
	_, err := natsbus.New(ctx, natsbus.Config{URL: "nats://me:Hunter2x@127.0.0.1:1", Service: "svc", Instance: "i1"})
	if err == nil || !strings.Contains(err.Error(), "natsbus: connect nats://xxxxx@127.0.0.1:1: ") {
		t.Errorf("New's error should name the masked URL: %v", err)
	}
}
