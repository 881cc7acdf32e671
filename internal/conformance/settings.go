package conformance

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
)

// watched records what a watcher was told.
type watched struct {
	mu   sync.Mutex // protects seen
	seen []settings.Setting
}

func (w *watched) add(v settings.Setting) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, v)
}

func (w *watched) versions(key string) []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int64
	for _, v := range w.seen {
		if v.Key == key {
			out = append(out, v.Version)
		}
	}
	return out
}

// exerciseSettings checks cluster-wide configuration: changes reach every instance's copy
// and watchers, versions guard read-modify-write, types and limits are enforced, history
// records who changed what, and polling catches changes no signal announced. The
// instances have the default timings: the settings tests need no fast failover.
func exerciseSettings(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"SetReachesEveryInstance", settingsSetReachesEveryInstance},
		{"TypedValuesAndWatchAll", settingsTypedValuesAndWatchAll},
		{"VersionsAndTypesGuardChanges", settingsVersionsAndTypesGuardChanges},
		{"SetTxCommitsWithTheCaller", settingsSetTxCommitsWithTheCaller},
		{"PollCatchesUnannouncedChanges", settingsPollCatchesUnannouncedChanges},
	})
}

func settingsSetReachesEveryInstance(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	nodes := []*twice.Node{backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())}
	other := backend.node(t, db, testnats.Service(), testnode.Calm())
	ws := make([]*watched, len(nodes))
	for i, n := range nodes {
		ws[i] = &watched{}
		t.Cleanup(n.Settings().Watch("checkout.enabled", ws[i].add))
	}
	v, err := nodes[0].Settings().Set(ctx, "checkout.enabled", true, &settings.SetOpts{Actor: "alice"})
	if err != nil || v.Version != 1 || v.Type != settings.TypeBool || v.Instance != nodes[0].ID() || v.UpdatedAt.IsZero() {
		t.Fatalf("Set = %+v, %v", v, err)
	}
	if !nodes[0].Settings().Bool("checkout.enabled", false) {
		t.Fatal("the writer does not read its own write at once")
	}
	for i, n := range nodes {
		testnode.Eventually(t, 10*time.Second, "every watcher sees version 1", func() bool { return len(ws[i].versions("checkout.enabled")) == 1 })
		if !n.Settings().Bool("checkout.enabled", false) {
			t.Fatalf("node %d reads false after its watcher saw the change", i)
		}
	}
	if _, err := nodes[1].Settings().Set(ctx, "checkout.enabled", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[2].Settings().Delete(ctx, "checkout.enabled", &settings.SetOpts{Actor: "bob"}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		// A watcher sees the latest version; one superseded before its instance read
		// it may be skipped, but versions never go backwards.
		testnode.Eventually(t, 10*time.Second, "every watcher sees the deletion", func() bool {
			got := ws[i].versions("checkout.enabled")
			return got[len(got)-1] == 3
		})
		if got := ws[i].versions("checkout.enabled"); !slices.IsSorted(got) || len(slices.Compact(got)) != len(got) {
			t.Fatalf("node %d saw versions %v", i, got)
		}
		if _, ok := n.Settings().Get("checkout.enabled"); ok {
			t.Fatalf("node %d still has the deleted key", i)
		}
	}
	if _, ok := other.Settings().Get("checkout.enabled"); ok {
		t.Fatal("another service sees the setting")
	}
	h, err := nodes[0].Settings().History(ctx, "checkout.enabled", 0)
	if err != nil || len(h) != 3 {
		t.Fatalf("History = %+v, %v", h, err)
	}
	if h[0].Version != 3 || !h[0].Deleted || h[0].Actor != "bob" || h[0].Instance != nodes[2].ID() ||
		h[2].Version != 1 || h[2].Text != "true" || h[2].Actor != "alice" || h[2].Instance != nodes[0].ID() {
		t.Fatalf("History = %+v", h)
	}
	if h[0].UpdatedAt.Before(h[2].UpdatedAt) {
		t.Fatalf("history times go backwards: %v before %v", h[0].UpdatedAt, h[2].UpdatedAt)
	}
}

func settingsTypedValuesAndWatchAll(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a, b := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	type limits struct {
		Max  int      `json:"max"`
		Tags []string `json:"tags"`
	}
	values := map[string]any{
		"s": "hello", "i": 42, "f": 0.5, "b": true, "d": 1500 * time.Millisecond,
		"j": limits{Max: 3, Tags: []string{"x"}},
	}
	for k, v := range values {
		if _, err := a.Settings().Set(ctx, k, v, nil); err != nil {
			t.Fatal(k, err)
		}
	}
	all := &watched{}
	defer b.Settings().WatchAll(all.add)()
	testnode.Eventually(t, 10*time.Second, "b has every value", func() bool { return len(b.Settings().List("")) == len(values) })
	s := b.Settings()
	var l limits
	if s.String("s", "") != "hello" || s.Int("i", 0) != 42 || s.Float("f", 0) != 0.5 || s.Float("i", 0) != 42 ||
		!s.Bool("b", false) || s.Duration("d", 0) != 1500*time.Millisecond || s.JSON("j", &l) != nil || l.Max != 3 || l.Tags[0] != "x" {
		t.Fatalf("typed reads: %+v", s.List(""))
	}
	if s.Int("s", -1) != -1 || s.String("missing", "def") != "def" {
		t.Fatal("a read of the wrong type or a missing key does not return the default")
	}
	if err := s.JSON("missing", &l); !errors.Is(err, settings.ErrNotFound) {
		t.Fatalf("JSON of a missing key: %v", err)
	}
	if err := s.JSON("i", &l); !errors.Is(err, settings.ErrType) {
		t.Fatalf("JSON of an int: %v", err)
	}
	testnode.Eventually(t, 10*time.Second, "WatchAll gets the current values", func() bool {
		all.mu.Lock()
		defer all.mu.Unlock()
		return len(all.seen) == len(values)
	})
	if got := s.List("i"); len(got) != 1 || got[0].Key != "i" {
		t.Fatalf("List(i) = %+v", got)
	}
}

func settingsVersionsAndTypesGuardChanges(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a, b := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	if _, err := a.Settings().Set(ctx, "n", 1, &settings.SetOpts{IfVersion: new(int64(1))}); !errors.Is(err, settings.ErrConflict) {
		t.Fatalf("IfVersion 1 on a new key: %v", err)
	}
	if _, err := a.Settings().Set(ctx, "n", 1, &settings.SetOpts{IfVersion: new(int64(0))}); err != nil {
		t.Fatalf("IfVersion 0 on a new key: %v", err)
	}
	if _, err := a.Settings().Set(ctx, "n", "one", nil); !errors.Is(err, settings.ErrType) {
		t.Fatalf("a string over an int: %v", err)
	}
	if _, err := a.Settings().Delete(ctx, "n", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Settings().Delete(ctx, "n", nil); !errors.Is(err, settings.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if v, err := a.Settings().Set(ctx, "n", "one", nil); err != nil || v.Version != 3 {
		t.Fatalf("a string after the delete: %+v, %v", v, err)
	}
	// Read-modify-write from two instances at once loses no increment.
	if _, err := a.Settings().Set(ctx, "counter", 0, nil); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int64
	var wg sync.WaitGroup
	for _, n := range []*twice.Node{a, b} {
		for range 2 {
			wg.Go(func() {
				for range 10 {
					for {
						if err := n.Settings().Refresh(ctx); err != nil {
							t.Error(err)
							return
						}
						cur, _ := n.Settings().Get("counter")
						_, err := n.Settings().Set(ctx, "counter", cur.Value.(int64)+1, &settings.SetOpts{IfVersion: new(cur.Version)})
						if errors.Is(err, settings.ErrConflict) {
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						wins.Add(1)
						break
					}
				}
			})
		}
	}
	wg.Wait()
	if err := a.Settings().Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.Settings().Int("counter", -1); got != 40 || wins.Load() != 40 {
		t.Fatalf("counter %d after %d successful increments, want 40", got, wins.Load())
	}
	// Limits.
	for _, c := range []struct {
		key   string
		value any
		opts  *settings.SetOpts
		want  error
	}{
		{"", 1, nil, settings.ErrBadKey},
		{"has space", 1, nil, settings.ErrBadKey},
		{strings.Repeat("k", settings.MaxKey+1), 1, nil, settings.ErrBadKey},
		{"big", strings.Repeat("x", settings.MaxValue+1), nil, settings.ErrTooLarge},
		{"who", 1, &settings.SetOpts{Actor: strings.Repeat("a", settings.MaxActor+1)}, settings.ErrTooLarge},
		{"nan", struct{ C chan int }{}, nil, settings.ErrBadValue},
	} {
		if _, err := a.Settings().Set(ctx, c.key, c.value, c.opts); !errors.Is(err, c.want) {
			t.Errorf("Set(%.20q): %v, want %v", c.key, err, c.want)
		}
	}
	if v, err := a.Settings().Set(ctx, "big", strings.Repeat("x", settings.MaxValue), nil); err != nil || len(v.Text) != settings.MaxValue {
		t.Fatalf("the largest value: %v", err)
	}
}

func settingsSetTxCommitsWithTheCaller(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a, b := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	rollback := errors.New("rollback")
	err := a.Store().InTx(ctx, func(tx store.Tx) error {
		if _, err := a.Settings().SetTx(ctx, tx, "rolled", 1, nil); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	err = a.Store().InTx(ctx, func(tx store.Tx) error {
		_, err := a.Settings().SetTx(ctx, tx, "committed", 1, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*twice.Node{a, b} {
		testnode.Eventually(t, 10*time.Second, "the committed change everywhere", func() bool { return n.Settings().Int("committed", 0) == 1 })
		if _, ok := n.Settings().Get("rolled"); ok {
			t.Fatal("a rolled-back change is visible")
		}
	}
	if h, err := a.Settings().History(ctx, "", 10); err != nil || len(h) != 1 || h[0].Key != "committed" {
		t.Fatalf("History = %+v, %v", h, err)
	}
}

// A writer with no bus (like a tool that only has the database) announces nothing; the
// instances' poll finds its changes all the same. History keeps the last versions.
func settingsPollCatchesUnannouncedChanges(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a := backend.node(t, db, svc, testnode.Calm())
	quiet, err := settings.New(block.Deps{Store: open(t, db, nil), Service: svc, Instance: "tool", Logger: testdb.Logger(t)},
		settings.Config{KeepHistory: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close(ctx)
	for i := range 5 {
		if _, err := quiet.Set(ctx, "limit", i, nil); err != nil {
			t.Fatal(err)
		}
	}
	testnode.Eventually(t, 10*time.Second, "the poll finds the change", func() bool { return a.Settings().Int("limit", -1) == 4 })
	h, err := quiet.History(ctx, "limit", 0)
	if err != nil || len(h) != 3 || h[0].Version != 5 || h[2].Version != 3 || h[0].Instance != "tool" {
		t.Fatalf("History = %+v, %v", h, err)
	}
}
