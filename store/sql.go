package store

import (
	"reflect"
	"strings"
	"unsafe"

	"github.com/jackc/pgx/v5"
)

// TablePrefix starts the name of every table, sequence and index of twice's: [Store.SQL]
// qualifies the names that start with it.
const TablePrefix = "twice_"

// SQL returns query as this store runs it: its template markers expanded for the store's
// dialect (see the package's template.go: {now}, {ms …}, casts, lists), and on PostgreSQL
// every twice table it names (an
// identifier starting with [TablePrefix], and such a name alone in a string literal, as in
// nextval('twice_jobs_id_seq')) is qualified with the store's schema, so the statement
// means the same on any connection whatever its search_path: on a transaction of the
// application's own pool too, which [Store.Wrap] joins. On SQLite tables need no schema.
//
// Building blocks pass their statements through it once, when they start (usually all at
// once with [Store.SQLAll]), so it costs nothing when a statement runs.
func (s *Store) SQL(query string) string {
	query = expand(s.dsn.Dialect, query)
	if s.dsn.Dialect != Postgres {
		return query
	}
	return QualifyTables(s.schema, query)
}

// SQLAll applies [Store.SQL] to every string field of the struct p points to, unexported
// fields and nested structs included: a building block's set of statements, copied from
// its package-level template and kept for the life of the store. It panics on a field it
// cannot rewrite (a slice, map or pointer), which would keep its statements as written.
func (s *Store) SQLAll(p any) {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("store: SQLAll needs a pointer to a struct")
	}
	s.sqlAll(v.Elem())
}

func (s *Store) sqlAll(v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			// The statements live in unexported fields of the blocks' own types; a
			// settable view of the (addressable) field reaches them.
			f = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
			f.SetString(s.SQL(f.String()))
		case reflect.Struct:
			s.sqlAll(f)
		case reflect.Slice, reflect.Array, reflect.Map, reflect.Pointer, reflect.Interface:
			// Statements kept there would silently stay as written.
			panic("store: SQLAll cannot reach the statements in field " + v.Type().Field(i).Name + " (" + f.Kind().String() + ")")
		}
	}
}

// Table names one of twice's tables (or sequences) for pgx's CopyFrom: with the store's
// schema on PostgreSQL, like the names [Store.SQL] qualifies.
func (s *Store) Table(name string) pgx.Identifier {
	if s.dsn.Dialect != Postgres {
		return pgx.Identifier{name}
	}
	return pgx.Identifier{s.schema, name}
}

// QualifyTables is what [Store.SQL] does on PostgreSQL, for schema. It reads query as
// PostgreSQL's lexer does, so quoted identifiers, comments and dollar-quoted bodies are left
// alone, and names already qualified (schema.twice_x), used as qualifiers (twice_x.col) or
// naming a constraint are kept as they are. Applying it twice changes nothing.
func QualifyTables(schema, query string) string {
	if !strings.Contains(query, TablePrefix) {
		return query
	}
	prefix := pgx.Identifier{schema}.Sanitize() + "."
	var b strings.Builder
	b.Grow(len(query) + 8*len(prefix))
	prevWord := "" // the last keyword or identifier, upper-cased
	i := 0
	for i < len(query) {
		c := query[i]
		switch {
		case c == '\'':
			end := literalEnd(query, i)
			body := query[i+1 : end-1]
			if isTableName(body) && !escapeString(query, i) {
				b.WriteString("'" + strings.ReplaceAll(prefix, "'", "''") + body + "'")
			} else {
				b.WriteString(query[i:end])
			}
			i = end
		case c == '"':
			end := quotedEnd(query, i)
			b.WriteString(query[i:end])
			prevWord, i = "", end
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				end = len(query) - i
			}
			b.WriteString(query[i : i+end])
			i += end
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			end := strings.Index(query[i+2:], "*/")
			if end < 0 {
				end = len(query) - i - 2
			} else {
				end += 2
			}
			b.WriteString(query[i : i+2+end])
			i += 2 + end
		case c == '$':
			end := dollarEnd(query, i)
			b.WriteString(query[i:end])
			i = end
		case isIdentStart(c):
			end := i + 1
			for end < len(query) && isIdentChar(query[end]) {
				end++
			}
			word := query[i:end]
			if strings.HasPrefix(word, TablePrefix) && prevByte(query, i) != '.' && nextByte(query, end) != '.' &&
				prevWord != "CONSTRAINT" {
				b.WriteString(prefix)
			}
			b.WriteString(word)
			prevWord, i = strings.ToUpper(word), end
		case isDigit(c):
			// A number, so that 1e5 is not read as an identifier e5.
			end := i + 1
			for end < len(query) && (isIdentChar(query[end]) || query[end] == '.') {
				end++
			}
			b.WriteString(query[i:end])
			i = end
		default:
			if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				prevWord = ""
			}
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// isTableName reports whether a string literal's body is a twice name alone.
func isTableName(s string) bool {
	if !strings.HasPrefix(s, TablePrefix) {
		return false
	}
	for i := range len(s) {
		if !isIdentChar(s[i]) {
			return false
		}
	}
	return true
}

// literalEnd returns the index after the string literal starting at i (a doubled quote
// escapes one).
func literalEnd(q string, i int) int {
	for j := i + 1; j < len(q); j++ {
		if q[j] == '\'' {
			if j+1 < len(q) && q[j+1] == '\'' {
				j++
				continue
			}
			return j + 1
		}
		if q[j] == '\\' && escapeString(q, i) {
			j++ // E'…' strings escape with backslashes
		}
	}
	return len(q)
}

// escapeString reports whether the literal starting at i is an E'…' string.
func escapeString(q string, i int) bool {
	return i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i < 2 || !isIdentChar(q[i-2]))
}

// quotedEnd returns the index after the quoted identifier starting at i.
func quotedEnd(q string, i int) int {
	for j := i + 1; j < len(q); j++ {
		if q[j] == '"' {
			if j+1 < len(q) && q[j+1] == '"' {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(q)
}

// dollarEnd returns the index after what starts with the $ at i: a parameter ($1), or a
// dollar-quoted string ($$…$$, $tag$…$tag$).
func dollarEnd(q string, i int) int {
	j := i + 1
	for j < len(q) && isDigit(q[j]) {
		j++
	}
	if j > i+1 {
		return j // $n
	}
	for j < len(q) && isIdentChar(q[j]) && q[j] != '$' {
		j++
	}
	if j >= len(q) || q[j] != '$' {
		return i + 1 // a lone $
	}
	tag := q[i : j+1]
	end := strings.Index(q[j+1:], tag)
	if end < 0 {
		return len(q)
	}
	return j + 1 + end + len(tag)
}

func prevByte(q string, i int) byte {
	for i--; i >= 0; i-- {
		if c := q[i]; c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c
		}
	}
	return 0
}

func nextByte(q string, i int) byte {
	for ; i < len(q); i++ {
		if c := q[i]; c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c
		}
	}
	return 0
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
