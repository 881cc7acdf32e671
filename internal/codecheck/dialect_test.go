package codecheck

import (
	"go/ast"
	"path/filepath"
	"testing"
)

// dialectFiles are the files of a block that may name the SQL dialects: its statements
// (sql.go) and its code for one dialect (pg.go, sqlite.go), as the bus has.
var dialectFiles = map[string]bool{"sql.go": true, "pg.go": true, "sqlite.go": true}

// dialectPackages know the dialects throughout: the store speaks them, the bus (with its
// test helper) chooses its backend by them, and twicetest makes a test's database of one.
var dialectPackages = map[string]bool{module + "/store": true, module + "/bus": true, module + "/bus/bustest": true, module + "/twicetest": true}

// TestDialectBranchesLiveInPerDialectFiles: a block's logic reads the same on both stores.
// What differs between the dialects is in its statements ({pg …}{sqlite …} fragments,
// written once in sql.go) or in its per-dialect files, so no other file of the library
// names a dialect, asks a store or querier for its Dialect, or takes one.
func TestDialectBranchesLiveInPerDialectFiles(t *testing.T) {
	src := parseModule(t)
	checked := 0
	for pkg, files := range src.files {
		if !isLibrary(pkg) || dialectPackages[pkg] {
			continue
		}
		for _, f := range files {
			name := filepath.Base(src.fset.Position(f.Pos()).Filename)
			if dialectFiles[name] {
				continue
			}
			checked++
			imports := importsOf(f)
			reported := map[int]bool{} // lines, so a comparison is reported once
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				x, isIdent := sel.X.(*ast.Ident)
				storePkg := isIdent && imports[x.Name] == module+"/store"
				switch {
				case storePkg && (sel.Sel.Name == "SQLite" || sel.Sel.Name == "Postgres" || sel.Sel.Name == "Dialect"):
				case !storePkg && sel.Sel.Name == "Dialect":
				default:
					return true
				}
				pos := src.fset.Position(sel.Pos())
				if reported[pos.Line] {
					return true
				}
				reported[pos.Line] = true
				t.Errorf("%s: %s in a block's logic: put what differs between the dialects in its statements ({pg …}{sqlite …} in sql.go) or in its pg.go and sqlite.go",
					pos, exprString(sel))
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no file was checked: the test reads nothing")
	}
}

// exprString spells a selector chain such as s.Dialect or store.SQLite.
func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	case *ast.CallExpr:
		return exprString(e.Fun) + "()"
	}
	return "…"
}
