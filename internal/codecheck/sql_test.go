package codecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// queryMethods run a statement given as an argument.
var queryMethods = map[string]bool{"Exec": true, "Query": true, "QueryRow": true,
	"ExecContext": true, "QueryContext": true, "QueryRowContext": true, "CopyFrom": true}

// notLibrary are the packages that are not the library: they run statements on a store
// they opened (the CLI, the checker's workloads) or are tests' helpers.
var notLibrary = []string{"/cmd/", "/internal/check", "/internal/instance", "/internal/conformance", "/internal/testdb", "/internal/testnats"}

// TestStatementsGoThroughStoreSQL: a statement that names twice's tables runs as
// Store.SQL made it (directly, or from a set built by Store.SQLAll), so on PostgreSQL it
// names them with the schema and means the same on any connection: on a transaction of
// the application's own pool, whose search_path knows nothing of twice's schema, too. A
// literal statement passed straight to Exec, Query or QueryRow, or a table named without
// Store.Table for CopyFrom, breaks that.
func TestStatementsGoThroughStoreSQL(t *testing.T) {
	eachStatementArg(t, func(pos token.Position, a ast.Expr) {
		if namesTables(a) {
			t.Errorf("%s: a statement naming twice's tables is run as written; pass it through Store.SQL (or Store.Table for CopyFrom)", pos)
		}
	})
}

// eachStatementArg calls fn with every argument of every call of a query method (Exec,
// Query, QueryRow…) in the library's packages, and fails the test if there is none.
func eachStatementArg(t *testing.T, fn func(pos token.Position, arg ast.Expr)) {
	t.Helper()
	src := parseModule(t)
	checked := 0
	for pkg, files := range src.files {
		if !isLibrary(pkg) {
			continue
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || !queryMethods[sel.Sel.Name] {
					return true
				}
				for _, a := range call.Args {
					checked++
					fn(src.fset.Position(a.Pos()), a)
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no statement was checked: the test reads nothing")
	}
}

// TestStatementSetsAreBuiltPerStore: a block's statements as written (its templates, a
// set or a function of the dialect) are used only by its queriesFor, which builds them for
// a store with Store.SQLAll, or one at a time inside Store.SQL.
func TestStatementSetsAreBuiltPerStore(t *testing.T) {
	src := parseModule(t)
	found := 0
	for pkg, files := range src.files {
		if !isLibrary(pkg) {
			continue
		}
		for _, f := range files {
			allowed := map[token.Pos]bool{}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncDecl:
					if n.Name.Name == "queriesFor" {
						ast.Inspect(n, allow(allowed))
					}
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "SQL" {
						for _, a := range n.Args {
							ast.Inspect(a, allow(allowed))
						}
					}
				}
				return true
			})
			declared := map[*ast.Ident]bool{} // the names in templates' own declaration
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncDecl:
					declared[n.Name] = true
				case *ast.ValueSpec:
					for _, id := range n.Names {
						declared[id] = true
					}
				}
				return true
			})
			ast.Inspect(f, func(n ast.Node) bool {
				id, ok := n.(*ast.Ident)
				if !ok || id.Name != "templates" || declared[id] {
					return true
				}
				found++
				if !allowed[id.Pos()] {
					t.Errorf("%s: statements used as written; build them with queriesFor(store) or pass one through Store.SQL",
						src.fset.Position(id.Pos()))
				}
				return true
			})
		}
	}
	if found == 0 {
		t.Fatal("no templates call found: the test reads nothing")
	}
}

func isLibrary(pkg string) bool {
	for _, p := range notLibrary {
		if strings.Contains(pkg+"/", p) {
			return false
		}
	}
	return true
}

// namesTables reports whether e spells a statement (or a CopyFrom table) naming a twice
// table in the source itself: a literal, literals joined with +, fmt.Sprintf of one, a
// composite literal (pgx.Identifier{"twice_jobs"}), or a block's statement template. A call of a method named SQL or Table
// is what makes it safe.
func namesTables(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Kind == token.STRING && strings.Contains(e.Value, "twice_")
	case *ast.BinaryExpr:
		return namesTables(e.X) || namesTables(e.Y)
	case *ast.ParenExpr:
		return namesTables(e.X)
	case *ast.SelectorExpr:
		// A statement of a block's set as written (templates.x, templates(d).x,
		// pgQueries.x), not as queriesFor built it for the store.
		switch x := e.X.(type) {
		case *ast.CallExpr:
			id, ok := x.Fun.(*ast.Ident)
			return ok && id.Name == "templates"
		case *ast.Ident:
			return x.Name == "templates" || x.Name == "pgQueries" || x.Name == "sqliteQueries"
		}
	case *ast.CompositeLit:
		for _, el := range e.Elts {
			if namesTables(el) {
				return true
			}
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "SQL" || sel.Sel.Name == "Table") {
			return false
		}
		for _, a := range e.Args {
			if namesTables(a) {
				return true
			}
		}
	}
	return false
}

// allow marks every node it visits in allowed.
func allow(allowed map[token.Pos]bool) func(ast.Node) bool {
	return func(n ast.Node) bool {
		if n != nil {
			allowed[n.Pos()] = true
		}
		return true
	}
}

// TestNoLinearSearchPerRow: a statement over a batch passed as arrays finds each row's
// values by its place in the batch. array_position finds it by a linear search, once per
// row: n² comparisons for a batch of n, which made recording a batch of 2000 completed
// jobs spend 30 ms on searching alone. The batch goes sorted by id and width_bucket finds
// the place by binary search instead (see jobs' sortByID).
func TestNoLinearSearchPerRow(t *testing.T) {
	eachString(t, func(pos token.Position, value string) {
		if searchesLinearly(value) {
			t.Errorf("%s: a statement uses array_position; sort the batch and use width_bucket", pos)
		}
	})
	if !searchesLinearly("attempt = ($5::integer[])[array_position($4::bigint[], id)]") {
		t.Error("a planted array_position is not found")
	}
}

// eachString calls fn with every string literal of the module's code, and fails the test
// if there is none.
func eachString(t *testing.T, fn func(pos token.Position, value string)) {
	t.Helper()
	src := parseModule(t)
	checked := 0
	for _, files := range src.files {
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					checked++
					fn(src.fset.Position(lit.Pos()), lit.Value)
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no string was checked: the test reads nothing")
	}
}

func searchesLinearly(sql string) bool {
	return strings.Contains(strings.ToLower(sql), "array_position(")
}

// A statement that waits for another session's lock for long holds its snapshot, and
// with it the horizon below which the database's dead rows cannot be removed, for every
// table, for as long as it waits. A session-level advisory lock is the one held for the
// life of a process (the liveness locks), so no statement may wait for one: try it in a
// loop that commits between tries (cluster/pg.go). Transaction-level ones are held for a
// transaction, and waits for them are short.
func TestNoWaitForSessionLock(t *testing.T) {
	eachString(t, func(pos token.Position, value string) {
		if waitsForSessionLock(value) {
			t.Errorf("%s: a statement waits for a session advisory lock; try it in a loop that commits between tries", pos)
		}
	})
	for _, planted := range []string{"SELECT pg_advisory_lock($1)", "select PG_ADVISORY_LOCK_SHARED(1, 2)"} {
		if !waitsForSessionLock(planted) {
			t.Errorf("a planted %q is not found", planted)
		}
	}
	for _, fine := range []string{"SELECT pg_try_advisory_lock($1)", "SELECT pg_advisory_xact_lock($1)", "SELECT pg_advisory_unlock($1)"} {
		if waitsForSessionLock(fine) {
			t.Errorf("%q is refused", fine)
		}
	}
}

func waitsForSessionLock(sql string) bool {
	l := strings.ToLower(sql)
	return strings.Contains(l, "pg_advisory_lock(") || strings.Contains(l, "pg_advisory_lock_shared(")
}

// TestErrorTextGoesThroughStoreText: an error's message passed to a statement goes through
// store.ErrorText (or store.Text): a message from a worker or handler can hold invalid
// UTF-8 or a NUL byte, which PostgreSQL refuses, failing the statement and all else it
// writes (a batch of jobs' outcomes), and can be of any length.
func TestErrorTextGoesThroughStoreText(t *testing.T) {
	eachStatementArg(t, func(pos token.Position, a ast.Expr) {
		if isErrorCall(a) {
			t.Errorf("%s: an error's message is written as it is; pass it through store.ErrorText", pos)
		}
	})
	planted, err := parser.ParseExpr(`s.Exec(ctx, q, id, err.Error())`)
	if err != nil {
		t.Fatal(err)
	}
	if !isErrorCall(planted.(*ast.CallExpr).Args[3]) {
		t.Error("a planted err.Error() argument is not found")
	}
}

// isErrorCall reports whether e is a call of a method named Error with no arguments.
func isErrorCall(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 0 {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Error"
}
