package jobs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// dialectFiles are the only files of the package that may ask which dialect the store
// speaks: the statements (sql.go, which also picks the engine) and the two engines.
var dialectFiles = map[string]bool{"sql.go": true, "pg.go": true, "sqlite.go": true}

// TestDialectOnlyInItsFiles: the job queue's logic (enqueue, producer, complete,
// maintain, admin, …) never branches on the dialect; what differs is the engine's
// (see engine.go). A call of Dialect() or a mention of store.Postgres or store.SQLite
// anywhere else is a branch that belongs in pg.go or sqlite.go.
func TestDialectOnlyInItsFiles(t *testing.T) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") || dialectFiles[name] {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Dialect" {
					t.Errorf("%s: asks the store's dialect; put what differs behind the engine (pg.go, sqlite.go)", fset.Position(n.Pos()))
				}
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "store" && (n.Sel.Name == "Postgres" || n.Sel.Name == "SQLite") {
					t.Errorf("%s: names a dialect; put what differs behind the engine (pg.go, sqlite.go)", fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
	if checked == 0 {
		t.Fatal("no file was checked: the test reads nothing")
	}
}
