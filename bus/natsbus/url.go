package natsbus

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// CheckURL reports whether s is a NATS server URL, or a comma-separated list of them, that
// [New] can use and that twice can print with its credentials masked: each element has a
// scheme (nats, tls, ws or wss) and a host, and an '@' only to end its user info, so
// '@', '/', '?', '#' and ',' in a password must be percent-encoded. Its error says what is
// wrong with which element, never repeating the URL, which may hold a password.
func CheckURL(s string) error {
	n := 0
	for e := range strings.SplitSeq(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		n++
		if problem := checkElem(e); problem != "" {
			return fmt.Errorf("natsbus: URL %d of the list: %s", n, problem)
		}
	}
	if n == 0 {
		return errors.New("natsbus: no URL")
	}
	return nil
}

// checkElem checks one URL of a list, as nats.go reads it (url.Parse), without echoing
// url.Parse's error text.
func checkElem(e string) string {
	if !strings.Contains(e, "://") {
		return "no scheme: want nats://[USER:PASSWORD@]HOST[:PORT]"
	}
	u, err := url.Parse(e)
	if err != nil {
		return "not a URL: percent-encode '%', '@', '/', '?', '#' and ',' in a user name, password or token"
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return "the scheme must be nats, tls, ws or wss"
	}
	if u.Host == "" {
		return "no host"
	}
	if strings.Count(e, "@") > 1 || strings.Contains(e, "@") && u.User == nil {
		return "an '@' that does not end the user info: percent-encode it (%40) in a password or token"
	}
	return ""
}
