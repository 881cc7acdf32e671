package codecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/twicehq/twice"

// source is the module's non-test code, parsed, by import path.
type source struct {
	fset  *token.FileSet
	files map[string][]*ast.File // import path → files
}

func parseModule(t *testing.T) *source {
	t.Helper()
	root := filepath.Join("..", "..")
	src := &source{fset: token.NewFileSet(), files: map[string][]*ast.File{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// bench is a module of its own.
			if rel == "bench" || rel == "testdata" || strings.HasSuffix(rel, "/testdata") || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(src.fset, p, nil, 0)
		if err != nil {
			return err
		}
		pkg := module
		if dir := path.Dir(rel); dir != "." {
			pkg += "/" + dir
		}
		src.files[pkg] = append(src.files[pkg], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// results lists, per result, whether its type is an interface (named in ifaces, or error)
// and whether it is a pointer.
type result struct{ iface, pointer bool }

func resultsOf(ft *ast.FuncType, ifaces map[string]bool, pkg string, imports map[string]string) []result {
	var out []result
	if ft.Results == nil {
		return nil
	}
	for _, f := range ft.Results.List {
		r := result{}
		switch ty := f.Type.(type) {
		case *ast.StarExpr:
			r.pointer = true
		case *ast.Ident:
			r.iface = ty.Name == "error" || ifaces[pkg+"."+ty.Name]
		case *ast.SelectorExpr:
			if x, ok := ty.X.(*ast.Ident); ok {
				r.iface = ifaces[imports[x.Name]+"."+ty.Sel.Name]
			}
		}
		n := max(len(f.Names), 1)
		for range n {
			out = append(out, r)
		}
	}
	return out
}

func importsOf(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		name := path.Base(p)
		if im.Name != nil {
			name = im.Name.Name
		}
		m[name] = p
	}
	return m
}

// TestNoTypedNilInterfaces: a function returning an interface must not pass on a call's
// pointer result as it is (return newThing(…)): when the call fails with a nil pointer, the
// caller gets a non-nil interface holding it, and its cleanup calls a method on nil. That
// is how twice.Open panicked when the bus could not start. Return nil explicitly on error.
func TestNoTypedNilInterfaces(t *testing.T) {
	src := parseModule(t)
	ifaces := map[string]bool{}
	for pkg, files := range src.files {
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				if ts, ok := n.(*ast.TypeSpec); ok {
					if _, ok := ts.Type.(*ast.InterfaceType); ok {
						ifaces[pkg+"."+ts.Name.Name] = true
					}
				}
				return true
			})
		}
	}
	funcs := map[string][]result{} // "pkg.Func" → its results
	for pkg, files := range src.files {
		for _, f := range files {
			imports := importsOf(f)
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
					funcs[pkg+"."+fd.Name.Name] = resultsOf(fd.Type, ifaces, pkg, imports)
				}
			}
		}
	}
	checked := 0
	for pkg, files := range src.files {
		for _, f := range files {
			imports := importsOf(f)
			var stack []*ast.FuncType // the enclosing functions, innermost last
			var visit func(n ast.Node) bool
			visit = func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncDecl:
					if n.Body != nil {
						stack = append(stack, n.Type)
						ast.Inspect(n.Body, visit)
						stack = stack[:len(stack)-1]
					}
					return false
				case *ast.FuncLit:
					stack = append(stack, n.Type)
					ast.Inspect(n.Body, visit)
					stack = stack[:len(stack)-1]
					return false
				case *ast.ReturnStmt:
					if len(stack) == 0 || len(n.Results) == 0 {
						return true
					}
					want := resultsOf(stack[len(stack)-1], ifaces, pkg, imports)
					var got []result
					if len(n.Results) == 1 {
						got = callResults(n.Results[0], funcs, pkg, imports)
					} else {
						for _, e := range n.Results {
							r := callResults(e, funcs, pkg, imports)
							if len(r) != 1 {
								r = []result{{}}
							}
							got = append(got, r[0])
						}
					}
					for i := range min(len(got), len(want)) {
						checked++
						if want[i].iface && got[i].pointer {
							t.Errorf("%s: returns a call's pointer result as an interface; on error it is a non-nil interface holding nil: check the error and return nil",
								src.fset.Position(n.Pos()))
						}
					}
				}
				return true
			}
			ast.Inspect(f, visit)
		}
	}
	if checked == 0 {
		t.Fatal("no return statement was checked: the test reads nothing")
	}
}

// callResults returns the results of the function e calls, when e is a call of a
// top-level function of the module.
func callResults(e ast.Expr, funcs map[string][]result, pkg string, imports map[string]string) []result {
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return nil
	}
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return funcs[pkg+"."+fn.Name]
	case *ast.SelectorExpr:
		if x, ok := fn.X.(*ast.Ident); ok {
			return funcs[imports[x.Name]+"."+fn.Sel.Name]
		}
	case *ast.IndexExpr: // a generic function's instantiation
		if id, ok := fn.X.(*ast.Ident); ok {
			return funcs[pkg+"."+id.Name]
		}
	}
	return nil
}
