package codecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// The plumbing of a background loop that internal/loop holds, and library code must not
// write out again.
const (
	detachedLiteral = "a detached timeout with a literal duration (use a named timeout of internal/loop)"
	ticker          = "time.NewTicker (use loop.StartEvery or loop.Every)"
	kickChannel     = "a make(chan struct{}, 1) kick channel (use loop.Loop's Kick)"
)

// notLoopLibrary are the import path prefixes (after the module's) that are not library
// code for this rule: commands, the consistency checker, the engine of `twice run` (a
// supervisor of processes, whose timers are its subject), test helpers, internal/loop
// itself, which is where the plumbing lives, and the example applications, written as a
// user of the library writes them (without internal packages).
var notLoopLibrary = []string{"/cmd/", "/examples/", "/internal/loop", "/internal/check", "/internal/run", "/internal/conformance",
	"/internal/testdb", "/internal/testnats", "/internal/testnode", "/bus/bustest"}

// loopAllowed are the hand-written loops kept on purpose, by file and what it writes, with
// why. An entry no file needs any more fails the test, so the list only shrinks.
var loopAllowed = map[[2]string]string{
	// The producer waits on two kicks that mean different things (new jobs: fetch at once
	// and maybe again soon; a free slot: fetch only if jobs are left) beside its own
	// poll and soon timers; one loop.Loop kick cannot tell them apart.
	{"jobs/producer.go", kickChannel}: "jobs' producer: two kinds of kick",
	// The lease keeper renews every held lease; its kick only re-reads the renewal interval
	// (a lease was taken or dropped) without renewing. It could run on loop.Loop the way
	// events' watcher does, but lease renewal is safety-critical and was left as it is.
	{"lease/lease.go", kickChannel}: "lease keeper: a kick that does not renew",
	// The watchers' queue (settings, presence) is drained on a goroutine started by the
	// first change; on close it hands out what is queued and then ends, bounded by the
	// caller's context. loop.Loop's Stop cancels instead of draining.
	{"internal/notify/notify.go", kickChannel}: "watchers' queue: drains before it ends",
}

type loopFinding struct {
	pos  token.Position
	what string
}

// loopViolations returns where f writes out loop plumbing by hand.
func loopViolations(fset *token.FileSet, f *ast.File) []loopFinding {
	imports := importsOf(f)
	// pkgCall reports whether e is a call of path's function name.
	pkgCall := func(e ast.Expr, path string, names ...string) bool {
		call, ok := e.(*ast.CallExpr)
		if !ok {
			return false
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return false
		}
		x, ok := sel.X.(*ast.Ident)
		if !ok || imports[x.Name] != path {
			return false
		}
		for _, n := range names {
			if sel.Sel.Name == n {
				return true
			}
		}
		return false
	}
	var out []loopFinding
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		switch {
		case pkgCall(call, "context", "WithTimeout", "WithDeadline") && len(call.Args) == 2 &&
			pkgCall(call.Args[0], "context", "Background", "TODO") && hasLiteralDuration(call.Args[1], imports):
			out = append(out, loopFinding{fset.Position(call.Pos()), detachedLiteral})
		case pkgCall(call, "time", "NewTicker"):
			out = append(out, loopFinding{fset.Position(call.Pos()), ticker})
		case isKickChannel(call):
			out = append(out, loopFinding{fset.Position(call.Pos()), kickChannel})
		}
		return true
	})
	return out
}

// hasLiteralDuration reports whether e is, or (for a deadline such as
// time.Now().Add(5*time.Second)) contains, a duration written with a number or a unit of
// package time alone, rather than a named constant or a configured value.
func hasLiteralDuration(e ast.Expr, imports map[string]string) bool {
	var literal func(e ast.Expr) bool
	literal = func(e ast.Expr) bool {
		switch e := e.(type) {
		case *ast.BasicLit:
			return true
		case *ast.ParenExpr:
			return literal(e.X)
		case *ast.BinaryExpr:
			return literal(e.X) && literal(e.Y)
		case *ast.SelectorExpr: // time.Second and the other units
			x, ok := e.X.(*ast.Ident)
			return ok && imports[x.Name] == "time" && timeUnits[e.Sel.Name]
		case *ast.CallExpr: // time.Duration(5)
			return len(e.Args) == 1 && literal(e.Fun) && literal(e.Args[0])
		}
		return false
	}
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		x, ok := n.(ast.Expr)
		if !ok || found {
			return false
		}
		// A bare number inside a larger expression (2*cfg.TTL) scales a configured value.
		if _, number := x.(*ast.BasicLit); literal(x) && (!number || x == e) {
			found = true
		}
		return !found
	})
	return found
}

// timeUnits are package time's duration units, and Duration for a conversion.
var timeUnits = map[string]bool{"Nanosecond": true, "Microsecond": true, "Millisecond": true, "Second": true,
	"Minute": true, "Hour": true, "Duration": true}

func isKickChannel(call *ast.CallExpr) bool {
	fn, ok := call.Fun.(*ast.Ident)
	if !ok || fn.Name != "make" || len(call.Args) != 2 {
		return false
	}
	ch, ok := call.Args[0].(*ast.ChanType)
	if !ok {
		return false
	}
	st, ok := ch.Value.(*ast.StructType)
	if !ok || len(st.Fields.List) != 0 {
		return false
	}
	n, ok := call.Args[1].(*ast.BasicLit)
	return ok && n.Kind == token.INT && n.Value == "1"
}

// TestLoopsOnInternalLoop: the background loops of library code run on internal/loop
// (start, kick, stop, the ticker, the named timeouts), not on kick, stop and done channels,
// tickers and 5/10/30-second timeouts written out again in every block. Issue 10 found the
// plumbing written 7 times with 4 sets of constants.
func TestLoopsOnInternalLoop(t *testing.T) {
	src := parseModule(t)
	root := filepath.Join("..", "..")
	used := map[[2]string]bool{}
	files := 0
	for pkg, fs := range src.files {
		if excluded(pkg) {
			continue
		}
		for _, f := range fs {
			files++
			for _, v := range loopViolations(src.fset, f) {
				rel, _ := filepath.Rel(root, v.pos.Filename)
				key := [2]string{filepath.ToSlash(rel), v.what}
				if _, ok := loopAllowed[key]; ok {
					used[key] = true
					continue
				}
				t.Errorf("%s:%d: %s", key[0], v.pos.Line, v.what)
			}
		}
	}
	if files == 0 {
		t.Fatal("no file was checked: the test reads nothing")
	}
	for key, why := range loopAllowed {
		if !used[key] {
			t.Errorf("the allowlist keeps %s in %s (%s), which the file no longer writes: drop the entry", key[1], key[0], why)
		}
	}
}

// excluded reports whether pkg is under one of notLoopLibrary.
func excluded(pkg string) bool {
	p := strings.TrimPrefix(pkg, module) + "/"
	for _, x := range notLoopLibrary {
		if strings.HasPrefix(p, strings.TrimSuffix(x, "/")+"/") {
			return true
		}
	}
	return false
}

// TestLoopRuleFlagsPlantedViolations keeps TestLoopsOnInternalLoop from passing by seeing
// nothing: each hand-written piece of plumbing below must be flagged, and the named or
// configured forms must not.
func TestLoopRuleFlagsPlantedViolations(t *testing.T) {
	const planted = `package planted

import (
	"context"
	tm "time"

	"github.com/twicehq/twice/internal/loop"
)

func bad(poll tm.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*tm.Second) // flagged
	_, c2 := context.WithTimeout(context.Background(), tm.Minute)          // flagged
	_, c3 := context.WithDeadline(context.Background(), tm.Now().Add(5*tm.Second)) // flagged
	t := tm.NewTicker(poll)                                                 // flagged
	kick := make(chan struct{}, 1)                                          // flagged

	_, c4 := context.WithTimeout(context.Background(), loop.StatementTimeout)
	_, c5 := context.WithTimeout(ctx, 10*tm.Second)
	_, c6 := context.WithTimeout(context.Background(), poll)
	done := make(chan struct{})
	buf := make(chan int, 1)
	_, _, _, _, _, _, _, _, _, _ = cancel, c2, c3, t, kick, c4, c5, c6, done, buf
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "planted.go", planted, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{11: detachedLiteral, 12: detachedLiteral, 13: detachedLiteral, 14: ticker, 15: kickChannel}
	got := map[int]string{}
	for _, v := range loopViolations(fset, f) {
		got[v.pos.Line] = v.what
	}
	for line, what := range want {
		if got[line] != what {
			t.Errorf("line %d: got %q, want %q", line, got[line], what)
		}
	}
	for line, what := range got {
		if _, ok := want[line]; !ok {
			t.Errorf("line %d flagged (%s), but it uses a named or configured value", line, what)
		}
	}
}
