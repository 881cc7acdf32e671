package deploy_test

import (
	"fmt"
	"strconv"
	"strings"
)

// parseYAML reads the block-style subset of YAML that kubernetes.yaml and compose.yaml are
// written in, into maps (map[string]any), lists ([]any) and scalars (string): documents
// separated by "---", nested maps and "- " lists by indentation (spaces only), plain and
// quoted scalars, one-line flow lists of scalars, "{}", comments, and anchors with merge
// keys ("x: &a", "<<: *a"). Anything else (a tab, a block scalar, a line indented where
// nothing may start, a key given twice) is an error naming the line: the module has no
// YAML library, and the files' structure is what the tests check.
func parseYAML(src string) ([]any, error) {
	var docs []any
	var cur []yline
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		p := &yparser{lines: cur, anchors: map[string]any{}}
		v, err := p.node(cur[0].indent)
		if err != nil {
			return err
		}
		if p.i < len(cur) {
			return p.errf("unexpected indentation")
		}
		docs = append(docs, v)
		cur = nil
		return nil
	}
	for n, raw := range strings.Split(src, "\n") {
		if strings.Contains(raw, "\t") {
			return nil, fmt.Errorf("line %d: a tab: YAML indents with spaces", n+1)
		}
		if strings.TrimSpace(raw) == "---" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		text := strings.TrimRight(stripComment(raw), " ")
		if strings.TrimSpace(text) == "" {
			continue
		}
		trimmed := strings.TrimLeft(text, " ")
		cur = append(cur, yline{no: n + 1, indent: len(text) - len(trimmed), text: trimmed})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

type yline struct {
	no, indent int
	text       string
}

type yparser struct {
	lines   []yline
	i       int
	anchors map[string]any
}

func (p *yparser) errf(format string, args ...any) error {
	no := 0
	if p.i < len(p.lines) {
		no = p.lines[p.i].no
	} else if len(p.lines) > 0 {
		no = p.lines[len(p.lines)-1].no
	}
	return fmt.Errorf("line %d: %s", no, fmt.Sprintf(format, args...))
}

func isItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

// node parses the map or list whose lines start at indent.
func (p *yparser) node(indent int) (any, error) {
	if p.i >= len(p.lines) || p.lines[p.i].indent != indent {
		return nil, p.errf("expected a value indented by %d", indent)
	}
	if isItem(p.lines[p.i].text) {
		return p.list(indent)
	}
	return p.mapping(indent)
}

func (p *yparser) list(indent int) ([]any, error) {
	var out []any
	for p.i < len(p.lines) && p.lines[p.i].indent == indent && isItem(p.lines[p.i].text) {
		rest := strings.TrimSpace(strings.TrimPrefix(p.lines[p.i].text, "-"))
		switch {
		case rest == "":
			p.i++
			if p.i >= len(p.lines) || p.lines[p.i].indent <= indent {
				return nil, p.errf("an empty list item")
			}
			v, err := p.node(p.lines[p.i].indent)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case keyOf(rest) != "":
			// "- key: value" starts a map whose other keys line up with key.
			p.lines[p.i] = yline{no: p.lines[p.i].no, indent: indent + 2, text: rest}
			v, err := p.mapping(indent + 2)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		default:
			v, err := p.scalar(rest)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			p.i++
		}
	}
	return out, nil
}

// keyOf returns the key of a "key: value" or "key:" line, or "".
func keyOf(text string) string {
	if strings.HasPrefix(text, `"`) || strings.HasPrefix(text, "'") {
		end := strings.IndexByte(text[1:], text[0])
		if end < 0 || !strings.HasPrefix(text[end+2:], ":") {
			return ""
		}
		return text[:end+2]
	}
	if strings.HasPrefix(text, "[") || strings.HasPrefix(text, "{") {
		return ""
	}
	if i := strings.Index(text, ": "); i > 0 {
		return text[:i]
	}
	if strings.HasSuffix(text, ":") && len(text) > 1 {
		return text[:len(text)-1]
	}
	return ""
}

func (p *yparser) mapping(indent int) (map[string]any, error) {
	out := map[string]any{}
	explicit := map[string]bool{} // keys written in this map, which a merge never replaces
	for p.i < len(p.lines) && p.lines[p.i].indent == indent && !isItem(p.lines[p.i].text) {
		text := p.lines[p.i].text
		k := keyOf(text)
		if k == "" {
			return nil, p.errf("expected key: value, found %q", text)
		}
		rest := strings.TrimSpace(text[len(k)+1:])
		key, err := unquote(k)
		if err != nil {
			return nil, p.errf("%v", err)
		}
		anchor := ""
		if strings.HasPrefix(rest, "&") {
			name, after, _ := strings.Cut(rest[1:], " ")
			anchor, rest = name, strings.TrimSpace(after)
		}
		var v any
		switch {
		case strings.HasPrefix(rest, "*"):
			a, ok := p.anchors[rest[1:]]
			if !ok {
				return nil, p.errf("alias *%s names no anchor above it", rest[1:])
			}
			v = a
			p.i++
		case rest != "":
			if v, err = p.scalar(rest); err != nil {
				return nil, err
			}
			p.i++
		default:
			p.i++
			switch {
			case p.i < len(p.lines) && p.lines[p.i].indent > indent:
				v, err = p.node(p.lines[p.i].indent)
			case p.i < len(p.lines) && p.lines[p.i].indent == indent && isItem(p.lines[p.i].text):
				v, err = p.list(indent) // a list may sit at its key's indentation
			default:
				v = "" // null
			}
			if err != nil {
				return nil, err
			}
		}
		if anchor != "" {
			p.anchors[anchor] = v
		}
		if key == "<<" {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, p.errf("<< merges a map")
			}
			for mk, mv := range m {
				if !explicit[mk] {
					out[mk] = mv
				}
			}
			continue
		}
		if explicit[key] {
			return nil, p.errf("key %q given twice", key)
		}
		explicit[key] = true
		out[key] = v
	}
	return out, nil
}

func (p *yparser) scalar(s string) (any, error) {
	switch {
	case s == "{}":
		return map[string]any{}, nil
	case strings.HasPrefix(s, "["):
		if !strings.HasSuffix(s, "]") {
			return nil, p.errf("a flow list must close on its line: %q", s)
		}
		var out []any
		for item := range strings.SplitSeq(s[1:len(s)-1], ",") {
			v, err := unquote(strings.TrimSpace(item))
			if err != nil {
				return nil, p.errf("%v", err)
			}
			out = append(out, v)
		}
		return out, nil
	case s == "|" || s == ">" || strings.HasPrefix(s, "|-") || strings.HasPrefix(s, ">-") || strings.HasPrefix(s, "{"):
		return nil, p.errf("not in the subset these tests read: %q", s)
	}
	v, err := unquote(s)
	if err != nil {
		return nil, p.errf("%v", err)
	}
	return v, nil
}

func unquote(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, `"`):
		return strconv.Unquote(s)
	case strings.HasPrefix(s, "'"):
		if len(s) < 2 || !strings.HasSuffix(s, "'") {
			return "", fmt.Errorf("unterminated quote: %s", s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	}
	return s, nil
}

// stripComment removes a comment: a # at the start or after a space, outside quotes.
func stripComment(line string) string {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' '):
			return line[:i]
		}
	}
	return line
}

// at walks a parsed document along path: map keys, and "[i]" for list elements.
func at(v any, path ...string) (any, bool) {
	for _, step := range path {
		if strings.HasPrefix(step, "[") {
			l, ok := v.([]any)
			i, err := strconv.Atoi(strings.Trim(step, "[]"))
			if !ok || err != nil || i >= len(l) {
				return nil, false
			}
			v = l[i]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[step]; !ok {
			return nil, false
		}
	}
	return v, true
}
