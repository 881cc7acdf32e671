package session

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// overTLS reports whether the client reached the service over TLS: the connection is TLS,
// or it comes from a trusted proxy whose headers say the client's side was HTTPS.
//
// Proxies append to X-Forwarded-Proto and Forwarded, so the leftmost values are whatever
// the client sent. Only what trusted proxies appended counts: the rightmost value, written
// by the proxy that connected to us, and the ones further left only while the hop each
// came from (X-Forwarded-For, or Forwarded's for=) is itself a trusted proxy.
//
// When both headers are present, either one saying https is enough. A proxy usually
// manages only one of them and passes the other through from the client, and the two
// mistakes are not alike: a client that forges "https" over plain HTTP only gets a Secure
// cookie its browser withholds (its own session breaks), while a forged "http" believed
// over HTTPS would strip the Secure flag from a real user's cookie.
func overTLS(r *http.Request, trusted []netip.Prefix) bool {
	if r.TLS != nil {
		return true
	}
	if len(trusted) == 0 || !fromTrusted(r.RemoteAddr, trusted) {
		return false
	}
	return forwardedProto(r.Header.Values("Forwarded"), trusted) == "https" ||
		xForwardedProto(r.Header.Values("X-Forwarded-Proto"), r.Header.Values("X-Forwarded-For"), trusted) == "https"
}

// claimsHTTPS reports whether r's nearest proxy, trusted or not, says the client used
// HTTPS: with no trusted proxy configured, a hint that one should be.
func claimsHTTPS(r *http.Request) bool {
	if r.Header.Get("X-Forwarded-Proto") == "" && r.Header.Get("Forwarded") == "" {
		return false
	}
	return forwardedProto(r.Header.Values("Forwarded"), nil) == "https" ||
		xForwardedProto(r.Header.Values("X-Forwarded-Proto"), nil, nil) == "https"
}

// xForwardedProto returns the scheme the client used according to the trusted proxies'
// X-Forwarded-Proto values, lower-cased, or "". X-Forwarded-For lines up with it only when
// every proxy appends to both; otherwise only the nearest proxy's value is known.
func xForwardedProto(protoLines, forLines []string, trusted []netip.Prefix) string {
	protos := splitList(protoLines)
	if len(protos) == 0 {
		return ""
	}
	i := len(protos) - 1
	if hops := splitList(forLines); len(hops) == len(protos) {
		for i > 0 && trustedNode(hops[i], trusted) {
			i--
		}
	}
	return strings.ToLower(protos[i])
}

// forwardedProto is xForwardedProto for the Forwarded header (RFC 7239), whose elements
// carry the hop (for=) and the scheme (proto=) together. A header that does not parse is
// ignored whole: a client's stray quote may have swallowed a proxy's element.
func forwardedProto(lines []string, trusted []netip.Prefix) string {
	hops, ok := parseForwarded(lines)
	if !ok || len(hops) == 0 {
		return ""
	}
	i := len(hops) - 1
	for i > 0 && trustedNode(hops[i].from, trusted) {
		i--
	}
	return strings.ToLower(hops[i].proto)
}

// splitList splits comma-separated field lines into their trimmed, non-empty elements.
func splitList(lines []string) []string {
	var out []string
	for _, line := range lines {
		for v := range strings.SplitSeq(line, ",") {
			if v = strings.Trim(v, " \t"); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// hop is one element of a Forwarded header.
type hop struct {
	from, proto string
}

// parseForwarded parses Forwarded field lines: elements separated by commas, pairs
// (token=value, the value a token or a quoted string) by semicolons. It reports false for
// anything else, including a parameter given twice in one element.
func parseForwarded(lines []string) ([]hop, bool) {
	var hops []hop
	for _, v := range lines {
		var h hop
		var seen int // bit 1: for, bit 2: proto, bit 4: any pair
		for {
			v = strings.TrimLeft(v, " \t")
			if v == "" {
				break
			}
			switch v[0] {
			case ',':
				if seen != 0 {
					hops = append(hops, h)
				}
				h, seen, v = hop{}, 0, v[1:]
				continue
			case ';':
				v = v[1:]
				continue
			}
			n := 0
			for n < len(v) && isTokenChar(v[n]) {
				n++
			}
			if n == 0 || n == len(v) || v[n] != '=' {
				return nil, false
			}
			name := strings.ToLower(v[:n])
			val, rest, ok := parseValue(v[n+1:])
			if !ok {
				return nil, false
			}
			bit := 4
			switch name {
			case "for":
				bit, h.from = 1, val
			case "proto":
				bit, h.proto = 2, val
			}
			if seen&bit&3 != 0 {
				return nil, false
			}
			seen |= bit | 4
			v = strings.TrimLeft(rest, " \t")
			if v != "" && v[0] != ';' && v[0] != ',' {
				return nil, false
			}
		}
		if seen != 0 {
			hops = append(hops, h)
		}
	}
	return hops, true
}

// parseValue reads a token or a quoted string at the start of v.
func parseValue(v string) (val, rest string, ok bool) {
	if v == "" {
		return "", "", false
	}
	if v[0] != '"' {
		n := 0
		for n < len(v) && isTokenChar(v[n]) {
			n++
		}
		return v[:n], v[n:], n > 0
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			return b.String(), v[i+1:], true
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		case c == '\\' || c < 0x20 && c != '\t' || c == 0x7f:
			return "", "", false
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false // unterminated
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// trustedNode reports whether a hop as proxies write it ("192.0.2.1", "192.0.2.1:80",
// "[2001:db8::1]:80", "2001:db8::1") is in a trusted prefix. Obfuscated and "unknown" hops
// are not.
func trustedNode(v string, trusted []netip.Prefix) bool {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return trustedAddr(ap.Addr(), trusted)
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]"))
	return err == nil && trustedAddr(ip, trusted)
}

func fromTrusted(remote string, trusted []netip.Prefix) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && trustedAddr(ip, trusted)
}

func trustedAddr(ip netip.Addr, trusted []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
