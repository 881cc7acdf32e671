// Package reporttest reads the pages of internal/report in tests: it writes a page, parses
// it, and finds its elements and their attributes.
package reporttest

import (
	"bytes"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// Render writes a page with write and parses it; it fails the test if either fails.
func Render(t testing.TB, write func(io.Writer) error) (string, *html.Node) {
	t.Helper()
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return buf.String(), doc
}

// Attr is n's attribute key, "" if it has none.
func Attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// Num is n's attribute key as a number; it fails the test if it is none.
func Num(t testing.TB, n *html.Node, key string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(Attr(n, key), 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.Data, key, Attr(n, key), err)
	}
	return f
}

// Find returns every element under n that match accepts, in document order.
func Find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && match(c) {
			out = append(out, c)
		}
	}
	return out
}

// ByID is the one element of doc with the id, or nil.
func ByID(doc *html.Node, id string) *html.Node {
	if m := Find(doc, func(n *html.Node) bool { return Attr(n, "id") == id }); len(m) == 1 {
		return m[0]
	}
	return nil
}

// HasClass reports whether n has the class c.
func HasClass(n *html.Node, c string) bool {
	return slices.Contains(strings.Fields(Attr(n, "class")), c)
}

// Tag matches the elements named tag with the class, or with any class for "".
func Tag(tag, class string) func(*html.Node) bool {
	return func(n *html.Node) bool { return n.Data == tag && (class == "" || HasClass(n, class)) }
}

// Text is the text under n, as one string.
func Text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return b.String()
}

// IsUnder reports whether n lies inside ancestor.
func IsUnder(n, ancestor *html.Node) bool {
	for p := n.Parent; p != nil; p = p.Parent {
		if p == ancestor {
			return true
		}
	}
	return false
}

// SelfContained fails the test if page would ask for anything from elsewhere (a script, a
// style sheet, an image, a font) or holds a NaN or an infinity where a number should be.
func SelfContained(t testing.TB, page string) {
	t.Helper()
	for _, bad := range []string{"http://", "https://", "<script", "<link", "src=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q: it must need nothing from elsewhere (and text from a run must be escaped)", bad)
		}
	}
	if m := regexp.MustCompile(`NaN|Inf`).FindString(page); m != "" {
		t.Errorf("the page has %q where a number should be", m)
	}
}

// Near reports whether two coordinates are the same to half a unit.
func Near(a, b float64) bool { return math.Abs(a-b) < 0.5 }
