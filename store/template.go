package store

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Building blocks write each statement once for both dialects, in PostgreSQL's SQL with a
// few markers for what the dialects spell differently; [Store.SQL] expands them for the
// store's dialect (and qualifies twice's tables), once, when the block is made:
//
//	{now}            database time, unless $1 carries a test clock's time (see [Store.NowArg])
//	{now $N}         the same, with parameter N
//	{clock}          database time, never a test clock's
//	{ms EXPR}        EXPR milliseconds, to add to or subtract from a time
//	{age LATER, EARLIER}  microseconds from EARLIER to LATER, scanned with [Micros]
//	                 (ms and age parenthesise an expression only when it is more than one term)
//	{in $N TYPE}     "is one of list parameter N", after an expression: x {in $4 bigint}
//	{notin $N TYPE}  "is none of list parameter N"; bind both lists with [Store.List]
//	{pg TEXT}        TEXT on PostgreSQL only (row locks such as FOR UPDATE SKIP LOCKED);
//	                 what follows "pg " is kept as written, so {pg  FOR UPDATE} is
//	                 " FOR UPDATE" (and a line break after pg is kept too)
//	{sqlite TEXT}    TEXT on SQLite only, likewise
//
// Casts (::bigint, ::text[]) are PostgreSQL's and vanish on SQLite, where a column's
// affinity does their work. Booleans are true and false on both. What truly differs
// between the dialects is written for each, as {pg …}{sqlite …} (a fragment, or a whole
// statement), with a comment saying why. Markers, casts and table names inside string
// literals, quoted identifiers and comments are left alone, so a block may mark a place
// it fills at run time with a comment (/*topics*/).
func expand(d Dialect, q string) string {
	if !strings.ContainsAny(q, "{:") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 64)
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'':
			end := literalEnd(q, i)
			b.WriteString(q[i:end])
			i = end
		case c == '"':
			end := quotedEnd(q, i)
			b.WriteString(q[i:end])
			i = end
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				end = len(q) - i
			}
			b.WriteString(q[i : i+end])
			i += end
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				end = len(q)
			} else {
				end += i + 4
			}
			b.WriteString(q[i:end])
			i = end
		case c == '{':
			end := braceEnd(q, i)
			b.WriteString(marker(d, q[i+1:end-1]))
			i = end
		case c == ':' && i+1 < len(q) && q[i+1] == ':':
			end := castEnd(q, i+2)
			if d == Postgres {
				b.WriteString(q[i:end])
			}
			i = end
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// marker expands one {…} marker's body.
func marker(d Dialect, m string) string {
	// The name ends at the first space or line break. One space after it only separates;
	// a line break is part of the text, so {pg<newline>FOR UPDATE} starts a line.
	name, raw := m, ""
	if i := strings.IndexAny(m, " \t\n"); i >= 0 {
		name, raw = m[:i], strings.TrimPrefix(m[i:], " ")
	}
	arg := strings.TrimSpace(raw)
	pg := d == Postgres
	switch name {
	case "now":
		n := "$1"
		if arg != "" {
			n = arg
		}
		if pg {
			return "coalesce(" + n + "::timestamptz, now())"
		}
		return "coalesce(" + n + ", " + SQLiteNow + ")"
	case "clock":
		if pg {
			return "now()"
		}
		return SQLiteNow
	case "ms":
		if pg {
			return operand(expand(d, arg)) + " * interval '1 millisecond'"
		}
		return operand(expand(d, arg)) + " * 1000"
	case "age":
		later, earlier, ok := strings.Cut(arg, ",")
		if !ok {
			panic(fmt.Sprintf("store: template marker {%s} needs two expressions", m))
		}
		diff := operand(expand(d, strings.TrimSpace(later))) + " - " + operand(expand(d, strings.TrimSpace(earlier)))
		if pg {
			return "(extract(epoch from " + diff + ") * 1000000)::bigint"
		}
		return diff
	case "in", "notin":
		param, typ, ok := strings.Cut(arg, " ")
		if !ok || !strings.HasPrefix(param, "$") {
			panic(fmt.Sprintf("store: template marker {%s} needs a parameter and a type: {%s $N TYPE}", m, name))
		}
		switch {
		case pg && name == "in":
			return "= ANY(" + param + "::" + strings.TrimSpace(typ) + "[])"
		case pg:
			return "<> ALL(" + param + "::" + strings.TrimSpace(typ) + "[])"
		case name == "in":
			return "IN (SELECT value FROM json_each(" + param + "))"
		default:
			return "NOT IN (SELECT value FROM json_each(" + param + "))"
		}
	case "pg": // the text after "pg ", spaces included
		if pg {
			return expand(d, raw)
		}
		return ""
	case "sqlite":
		if !pg {
			return expand(d, raw)
		}
		return ""
	}
	panic(fmt.Sprintf("store: unknown template marker {%s}", m))
}

// operand returns expr ready to be an operand of * or -: as it is when it is one term (a
// name, a parameter, a number, a call or a parenthesised expression, perhaps cast), which
// binds tighter than either, and parenthesised otherwise. Statements then read as if
// written by hand: ttl_ms * interval '1 millisecond', not (ttl_ms) * interval ….
func operand(expr string) string {
	i := 0
	for i < len(expr) && (isIdentChar(expr[i]) || expr[i] == '.') {
		i++
	}
	if i < len(expr) && expr[i] == '(' {
		if i = closing(expr, i, '(', ')'); i < 0 {
			return "(" + expr + ")"
		}
	} else if i == 0 {
		return "(" + expr + ")"
	}
	for i+1 < len(expr) && expr[i] == ':' && expr[i+1] == ':' {
		i = castEnd(expr, i+2)
	}
	if i != len(expr) {
		return "(" + expr + ")"
	}
	return expr
}

// braceEnd returns the index after the marker starting at i; markers may nest.
func braceEnd(q string, i int) int {
	end := closing(q, i, '{', '}')
	if end < 0 {
		panic("store: template marker not closed: " + q[i:])
	}
	return end
}

// closing returns the index after the close that matches the open at q[i], or -1 when
// none does. Brackets inside string literals do not count.
func closing(q string, i int, open, close byte) int {
	depth := 0
	for j := i; j < len(q); j++ {
		switch q[j] {
		case '\'':
			j = literalEnd(q, j) - 1
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return j + 1
			}
		}
	}
	return -1
}

// castEnd returns the index after a cast's type name that starts at i: identifier words
// ("double precision" is not one) and array brackets.
func castEnd(q string, i int) int {
	for i < len(q) && (isIdentChar(q[i]) || q[i] == '[' || q[i] == ']') {
		i++
	}
	return i
}

// List is the value to bind to a list parameter of a statement ({in $N TYPE} or
// {notin $N TYPE}): the slice itself on PostgreSQL, its JSON text on SQLite.
func (s *Store) List(v any) any { return s.dsn.Dialect.List(v) }

// List is [Store.List] for a dialect.
func (d Dialect) List(v any) any {
	if d == Postgres {
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: a list parameter of %T does not encode: %v", v, err))
	}
	return string(b)
}
