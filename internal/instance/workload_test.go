package instance

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/cron"
)

// unregistered is a workload the registry does not know.
type unregistered struct{ Lock }

// TestWorkloadsTravelByName: Options carry each workload to the child as its registered
// name and its parameters, and the child gets the same workloads back; a workload the
// registry does not know is refused on either side.
func TestWorkloadsTravelByName(t *testing.T) {
	t.Parallel()
	o := Options{DSN: "sqlite:x.db", Service: "svc", LeaseTTL: time.Second, Workloads: []Workload{
		FencedWriter{}, Lock{LockName: "nightly"}, Consume{Mode: "shared", Work: time.Millisecond},
		Jobs{Concurrency: 3, Cron: "* * * * * *", CatchUp: cron.CatchUpAll, Grace: time.Second},
		IdempotencyHTTP{Block: true},
	}}
	o.Workloads = append(o.Workloads, CheckWorkloads()...)
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{`"name":"lock"`, `"lock_name":"nightly"`, `"name":"check-http"`} {
		if !strings.Contains(string(b), name) {
			t.Errorf("%s lacks %s", b, name)
		}
	}
	var got Options
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, o) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, o)
	}
	if _, err := json.Marshal(Options{Workloads: []Workload{unregistered{}}}); err == nil {
		t.Error("an unregistered workload was sent")
	}
	if err := json.Unmarshal([]byte(`{"workloads":[{"name":"juggle"}]}`), &got); err == nil || !strings.Contains(err.Error(), "juggle") {
		t.Errorf("an unknown name: %v", err)
	}
}

// TestEveryWorkloadIsRegistered: every type of the package with a start method is in the
// registry, under the name it gives itself, so a parent can ask for it.
func TestEveryWorkloadIsRegistered(t *testing.T) {
	t.Parallel()
	byType := map[string]string{}
	for name, typ := range workloads {
		byType[typ.Name()] = name
		if w := reflect.Zero(typ).Interface().(Workload); w.Name() != name {
			t.Errorf("%v is registered as %q but is named %q", typ, name, w.Name())
		}
	}
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "start" {
				continue
			}
			found++
			if id, ok := fn.Recv.List[0].Type.(*ast.Ident); !ok || byType[id.Name] == "" {
				t.Errorf("%s has a start method but is not registered in workloads (or has a pointer receiver)", types.ExprString(fn.Recv.List[0].Type))
			}
		}
	}
	if found != len(workloads) {
		t.Errorf("%d start methods, %d workloads registered", found, len(workloads))
	}
}
