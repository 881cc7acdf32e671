package twice_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"maps"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/twicehq/twice"
)

// snippet is one ```go block of README.md.
type snippet struct {
	line  int // README line of the block's first line of code
	lines []string
}

// readmeSnippets returns the Go blocks of README.md.
func readmeSnippets(t *testing.T) []snippet {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []snippet
	var cur *snippet
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &snippet{line: n + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: a Go block is never closed", cur.line-1)
	}
	return out
}

// Placeholders a snippet may use for code it leaves out: "{ … }" as a block's body and "…"
// alone on a line as statements. An ellipsis anywhere else fails to parse, so a snippet
// never leaves out an expression whose type nobody checks.
var (
	elidedBody = regexp.MustCompile(`\{ ?… ?\}`)
	elidedLine = regexp.MustCompile(`^(\s*)…\s*$`)
)

// source turns a snippet into a Go file of package readme: declarations at the left margin
// (func, type) stay at the top level, everything else becomes the body of one function
// returning error, and //line comments keep every position the README's own.
func (s snippet) source(imports []string) string {
	var decls, body bytes.Buffer
	fmt.Fprintf(&decls, "package readme\n\nimport (\n")
	for _, p := range imports {
		fmt.Fprintf(&decls, "\t%q\n", p)
	}
	decls.WriteString(")\n")
	inDecl := false
	lastBody := -2
	for i, line := range s.lines {
		n := s.line + i
		line = elidedBody.ReplaceAllString(line, `{ panic("elided") }`)
		line = elidedLine.ReplaceAllString(line, `${1}panic("elided")`)
		startsDecl := strings.HasPrefix(line, "func ") || strings.HasPrefix(line, "type ")
		switch {
		case inDecl:
			decls.WriteString(line + "\n")
			inDecl = !strings.HasPrefix(line, "}") && !strings.HasPrefix(line, ")")
		case startsDecl:
			fmt.Fprintf(&decls, "//line README.md:%d\n%s\n", n, line)
			code := strings.TrimSpace(line)
			if c := strings.Index(code, " //"); c >= 0 {
				code = strings.TrimSpace(code[:c])
			}
			inDecl = strings.HasSuffix(code, "{") || strings.HasSuffix(code, "(")
		default:
			if lastBody != i-1 {
				fmt.Fprintf(&body, "//line README.md:%d\n", n)
			}
			body.WriteString(line + "\n")
			lastBody = i
		}
	}
	fmt.Fprintf(&decls, "\nfunc snippet() error {\n%s\treturn nil\n}\n", body.String())
	return decls.String()
}

// readmeImports are the packages a snippet may use without importing them.
var readmeImports = []string{
	"context", "database/sql", "embed", "errors", "fmt", "log/slog", "net/http", "strconv", "testing", "time",
	"github.com/twicehq/twice", "github.com/twicehq/twice/cache", "github.com/twicehq/twice/cron", "github.com/twicehq/twice/dashboard",
	"github.com/twicehq/twice/events", "github.com/twicehq/twice/forward", "github.com/twicehq/twice/idempotency", "github.com/twicehq/twice/jobs", "github.com/twicehq/twice/metrics",
	"github.com/twicehq/twice/lease", "github.com/twicehq/twice/occ", "github.com/twicehq/twice/partition", "github.com/twicehq/twice/session",
	"github.com/twicehq/twice/presence", "github.com/twicehq/twice/realtime", "github.com/twicehq/twice/settings", "github.com/twicehq/twice/store", "github.com/twicehq/twice/twicetest",
	"github.com/twicehq/twice/workflow", "go.opentelemetry.io/otel/trace",
}

// readmeStandIns declare, for every snippet, what the snippets use and leave to the reader:
// the request's context, the application's types and functions. One a line, by name; a
// snippet that declares a name itself does without the stand-in.
var readmeStandIns = map[string]string{
	"ctx":            "var ctx context.Context",
	"tp":             "var tp trace.TracerProvider",
	"cfg":            "var cfg twice.Config",
	"msg":            "var msg any",
	"userOf":         "func userOf(r *http.Request) (string, error) { panic(0) }",
	"mux":            "var mux *http.ServeMux",
	"node":           "var node *twice.Node",
	"tx":             "var tx store.Tx",
	"db":             "var db *sql.DB",
	"id":             "var id int64",
	"body":           "var body []byte",
	"item":           "var item []byte",
	"cart":           "var cart Cart",
	"user":           "var user User",
	"params":         "var params []jobs.Params",
	"loadedVersion":  "var loadedVersion int64",
	"yesterday":      "var yesterday time.Time",
	"title":          "var title string",
	"traceID":        "var traceID string",
	"expected":       "var expected int64",
	"docs":           "var docs http.Handler",
	"rooms":          "var rooms *partition.Set",
	"roomPages":      "var roomPages http.Handler",
	"a":              "var a *partition.Assignment",
	"mailer":         "var mailer interface{ Send(ctx context.Context, userID int64) error }",
	"Cart":           "type Cart struct{ Items []string }",
	"User":           "type User struct{ ID int64; Name string }",
	"Report":         "type Report struct{}\nfunc (Report) Kind() string { return \"report\" }",
	"Sync":           "type Sync struct{}\nfunc (Sync) Kind() string { return \"sync\" }",
	"Flush":          "type Flush struct{}\nfunc (Flush) Kind() string { return \"flush\" }",
	"SendReceipt":    "type SendReceipt struct{ OrderID int64 }\nfunc (SendReceipt) Kind() string { return \"send-receipt\" }",
	"WelcomeEmail":   "type WelcomeEmail struct{ UserID int64 }\nfunc (WelcomeEmail) Kind() string { return \"welcome-email\" }",
	"signup":         "func signup(ctx context.Context, n *twice.Node, tx store.Tx, userID int64) error { panic(0) }",
	"loadUser":       "func loadUser(ctx context.Context, db *sql.DB, id int64) (User, error) { panic(0) }",
	"renameUser":     "func renameUser(ctx context.Context, tx store.Tx, id int64, name string) error { panic(0) }",
	"doLeaderWrite":  "func doLeaderWrite(ctx context.Context, tx store.Tx) error { panic(0) }",
	"sendEmail":      "func sendEmail(ctx context.Context, e events.Event) error { panic(0) }",
	"refreshPrices":  "func refreshPrices(ctx context.Context, e events.Event) error { panic(0) }",
	"amountOf":       "func amountOf(e events.Event) int64 { panic(0) }",
	"currentVersion": "func currentVersion(r *http.Request) (int64, bool, error) { panic(0) }",
	"checkPassword":  "func checkPassword(ctx context.Context, email, password string) (User, error) { panic(0) }",
	"refund":         "func refund(w http.ResponseWriter, r *http.Request) { panic(0) }",
	"writeReport":    "func writeReport(ctx context.Context, tick time.Time) error { panic(0) }",
}

// standIns returns the stand-ins the snippet source src does not declare itself.
func standIns(src string) string {
	f, err := parser.ParseFile(token.NewFileSet(), "", src, parser.SkipObjectResolution)
	if err != nil {
		return "" // the snippet's own parse error is reported with its position
	}
	own := map[string]bool{}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				own[d.Name.Name] = true
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok {
					own[ts.Name.Name] = true
				}
			}
		}
	}
	var b strings.Builder
	b.WriteString("package readme\n\nimport (\n")
	for _, p := range readmeImports {
		fmt.Fprintf(&b, "\t%q\n", p)
	}
	b.WriteString(")\n\n")
	for _, name := range slices.Sorted(maps.Keys(readmeStandIns)) {
		if !own[name] {
			b.WriteString(readmeStandIns[name] + "\n")
		}
	}
	return b.String()
}

// moduleImporter imports packages from the export data the go command keeps for them,
// so type-checking a snippet costs no compilation of the module.
func moduleImporter(t *testing.T, fset *token.FileSet) types.Importer {
	t.Helper()
	args := append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}"}, readmeImports...)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v\n%s", err, stderr.Bytes())
	}
	exports := map[string]string{}
	for line := range strings.Lines(string(out)) {
		path, file, _ := strings.Cut(strings.TrimSpace(line), "\t")
		exports[path] = file
	}
	return importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file := exports[path]
		if file == "" {
			return nil, fmt.Errorf("no export data for %q", path)
		}
		return os.Open(file)
	})
}

// TestREADMESnippetsCompile type-checks every Go block of README.md against the module's
// packages as they are, so the README cannot show an API that does not exist or a call
// that does not compile. Each block becomes a file of its own package: its declarations at
// the top level, its statements in a function returning error, with stand-ins
// (readmeStandIns) for the names it leaves to the reader. Variables and imports a
// fragment leaves unused are fine; every other error is reported at its README line.
func TestREADMESnippetsCompile(t *testing.T) {
	snippets := readmeSnippets(t)
	if len(snippets) < 10 {
		t.Fatalf("found %d Go blocks in README.md; the extraction is broken", len(snippets))
	}
	fset := token.NewFileSet()
	imp := moduleImporter(t, fset)
	for _, s := range snippets {
		src := s.source(readmeImports)
		f, err := parser.ParseFile(fset, "snippet.go", src, parser.ParseComments)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		others, err := parser.ParseFile(fset, "standins.go", standIns(src), 0)
		if err != nil {
			t.Fatalf("stand-ins: %v", err)
		}
		conf := types.Config{Importer: imp, Error: func(err error) {
			if te, ok := err.(types.Error); ok && te.Soft && (strings.Contains(te.Msg, "declared and not used") || strings.Contains(te.Msg, "imported and not used")) {
				return
			}
			t.Errorf("%v", err)
		}}
		_, _ = conf.Check("readme", fset, []*ast.File{f, others}, nil)
	}
}

// TestREADMEConfigTable: the README's Configuration table has a row for every field of
// twice.Config, and no row for a field that does not exist.
func TestREADMEConfigTable(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n#")
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\|").FindAllStringSubmatch(section, -1) {
		rows[m[1]] = true
	}
	typ := reflect.TypeFor[twice.Config]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() && !rows[f.Name] {
			t.Errorf("README.md's Configuration table has no row for Config.%s", f.Name)
		}
		delete(rows, typ.Field(i).Name)
	}
	for name := range rows {
		t.Errorf("README.md's Configuration table has a row for %s, which Config does not have", name)
	}
}

// TestDocNamesEveryPackage: the root package's documentation (doc.go) lists every public
// package of the module (commands and the example applications are programs, not
// packages to import).
func TestDocNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		pkg := strings.TrimSpace(line)
		if pkg == "github.com/twicehq/twice" || strings.Contains(pkg, "/internal/") || strings.Contains(pkg, "/cmd/") || strings.Contains(pkg, "/examples/") {
			continue
		}
		if !bytes.Contains(doc, []byte("["+pkg+"]")) {
			t.Errorf("doc.go does not name %s", pkg)
		}
	}
}
