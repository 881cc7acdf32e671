package codecheck

import (
	"go/ast"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// testSupport are the packages that only tests use; they may reach into any block's tables
// to stage what a test needs (a forged row, a vanished member).
var testSupport = []string{"/internal/conformance", "/internal/testdb", "/internal/testnats"}

// namedElsewhere are the only places a table, or a name that looks like one, is named
// outside the package whose migrations create it. Each says why it cannot go through
// the owner's API or its Component's declared tables.
var namedElsewhere = []struct{ pkg, name, why string }{
	{"store", "twice_migrations", "the migrator's own version table, created by the migrator, not by a component"},
	{"session", "twice_session", "the session cookie's default name, not a table"},
	{"cmd/twice", "twice_check_", "the prefix of the scratch schema `twice check` makes on PostgreSQL, not a table"},
	{"jobs", "twice_members", "jobs counts the workers of live members in one statement with its own table (queues.go), as cluster.Alive's joins do"},
	{"presence", "twice_members", "presence reads live members' entries with their address in one statement, and finds dead members owning entries from the members' side (an index probe per member, not a scan of the entries), as cluster.Alive's joins do"},
	{"internal/check", "twice_events", "the checker is the oracle: it counts the events the database holds, not what the API it judges reports"},
	{"internal/check", "twice_jobs", "the checker is the oracle: it reads the jobs the database holds, not what the API it judges reports"},
}

var (
	tableWord   = regexp.MustCompile(`twice_[a-z0-9_]+`)
	createTable = regexp.MustCompile(`(?i)\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z0-9_]+)`)
)

// TestTablesNamedOnlyByTheirOwners: a table belongs to the package whose migrations create
// it (its Component declares it). Outside that package and its subpackages, no library or
// CLI code names it (or its indexes, sequences, constraints) in a string: other code asks
// the block's API, or reaches the tables through the declarations (store.DeleteService,
// store.Services). Names no migration creates are refused too, so a table made on the side
// by a CREATE TABLE in Go is caught. The exceptions are listed in namedElsewhere.
func TestTablesNamedOnlyByTheirOwners(t *testing.T) {
	owners := tableOwners(t)
	if len(owners) < 15 {
		t.Fatalf("found the owners of %d tables only: the test reads nothing", len(owners))
	}
	src := parseModule(t)
	checked, used := 0, map[int]bool{}
	for pkg, files := range src.files {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		if slices.ContainsFunc(testSupport, func(p string) bool { return strings.Contains(pkg+"/", p+"/") }) {
			continue
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				for _, word := range tableWord.FindAllString(lit.Value, -1) {
					checked++
					owner, table, ok := ownerOf(owners, word)
					if ok && (rel == owner || strings.HasPrefix(rel, owner+"/")) {
						continue
					}
					if i := slices.IndexFunc(namedElsewhere, func(e struct{ pkg, name, why string }) bool {
						return e.pkg == rel && e.name == word
					}); i >= 0 {
						used[i] = true
						continue
					}
					if ok {
						t.Errorf("%s: names %s, a table of %s; use %s's API, or the tables its Component declares",
							src.fset.Position(lit.Pos()), table, owner, owner)
					} else {
						t.Errorf("%s: names %s, which no component's migrations create; create tables in a component's migrations and declare them",
							src.fset.Position(lit.Pos()), word)
					}
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no table name found in any string: the test reads nothing")
	}
	for i, e := range namedElsewhere {
		if !used[i] {
			t.Errorf("the exception for %s in %s is no longer needed: remove it", e.name, e.pkg)
		}
	}
}

// tableOwners maps every table a component's migrations create to the package that holds
// the migrations (path relative to the module).
func tableOwners(t *testing.T) map[string]string {
	t.Helper()
	root := filepath.Join("..", "..")
	owners := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "bench" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		dir, dialect := path.Split(path.Dir(rel))
		if !strings.HasSuffix(rel, ".up.sql") || path.Base(dir) != "migrations" || dialect != "postgres" && dialect != "sqlite" {
			return nil
		}
		pkg := path.Dir(strings.TrimSuffix(dir, "/"))
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range createTable.FindAllStringSubmatch(string(body), -1) {
			if o, dup := owners[m[1]]; dup && o != pkg {
				t.Errorf("table %s is created by the migrations of both %s and %s", m[1], o, pkg)
			}
			owners[m[1]] = pkg
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return owners
}

// ownerOf finds the table word names (the longest table name that word is, or starts with
// followed by "_", as an index or a sequence does) and its owner.
func ownerOf(owners map[string]string, word string) (owner, table string, ok bool) {
	for tb, o := range owners {
		if (word == tb || strings.HasPrefix(word, tb+"_")) && len(tb) > len(table) {
			owner, table, ok = o, tb, true
		}
	}
	return owner, table, ok
}
