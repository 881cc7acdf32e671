package safe

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCall(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var count atomic.Int64
	cause := errors.New("cause")

	if err := Call(log, &count, "test: fn", func() error { return cause }); err != cause {
		t.Fatalf("Call passed %v through, want fn's own error", err)
	}
	if count.Load() != 0 || buf.Len() != 0 {
		t.Fatalf("an error that is not a panic was counted (%d) or logged (%q)", count.Load(), buf.String())
	}

	err := Call(log, &count, "test: fn", func() error { panic(cause) })
	var pe *PanicError
	if !errors.As(err, &pe) || pe.What != "test: fn" || !errors.Is(err, cause) {
		t.Fatalf("Call of a panicking fn = %v, want a *PanicError wrapping the panic value", err)
	}
	if err.Error() != "test: fn panicked: cause" {
		t.Errorf("error text %q", err.Error())
	}
	if !strings.Contains(buf.String(), "test: fn panicked") || !strings.Contains(buf.String(), "safe_test.go") {
		t.Errorf("log lacks the panic or its stack: %q", buf.String())
	}
	if !Do(nil, &count, "test: do", func() { panic(nil) }) {
		t.Error("Do reported no panic for panic(nil)")
	}
	if Do(log, nil, "test: do", func() {}) {
		t.Error("Do reported a panic for a function that returned")
	}
	if count.Load() != 2 {
		t.Errorf("count = %d, want 2", count.Load())
	}
}

// allowedRecover lists the recover calls outside this package, each with why it is not a
// user callback on one of the library's goroutines.
var allowedRecover = map[string]string{
	"jobs/client.go": "kindOf probes Kind on a nil pointer while registering; a panic there is an answer, not a failure",
}

// TestOneRecoverRule: code the library runs for its users goes through Call or Do, so every
// panic is logged and counted the same way. A recover anywhere else is a second mechanism.
func TestOneRecoverRule(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// bench is a module of its own; this package is where recover belongs.
			if rel == "bench" || rel == "internal/safe" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "recover" {
				if _, ok := allowedRecover[rel]; !ok {
					t.Errorf("%s: recover outside internal/safe; run the user's code through safe.Call or safe.Do", fset.Position(call.Pos()))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
