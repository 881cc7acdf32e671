package twice_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

type fetchedJob struct{ Name string }

func (fetchedJob) Kind() string { return "fetched" }

// The jobs one fetch claims each keep their own values: the fetch scans its rows through
// one set of destinations, and a row with a NULL where the row before had a value (no key,
// no tags, no meta, no timeout) reads as empty, not as the other job's.
func TestFetchedJobsKeepTheirOwnValues(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		n := testnode.Open(t, db, "fetched", testnode.Steady())
		want := map[string]jobs.Opts{
			"a": {Key: "k1", Tags: []string{"x"}, Meta: map[string]string{"m": "1"}, Timeout: 7 * time.Second},
			"b": {},
			"c": {Key: "k2", Tags: []string{"y", "z"}},
			"d": {Meta: map[string]string{"n": "2"}, Timeout: 3 * time.Second},
			"e": {Key: "k3"},
			"f": {},
		}
		var ps []jobs.Params
		for _, name := range slices.Sorted(maps.Keys(want)) {
			o := want[name]
			ps = append(ps, jobs.Params{Args: fetchedJob{Name: name}, Opts: &o})
		}
		// Enqueued before the worker registers, which starts the queue: one fetch takes all.
		if _, err := n.Jobs().EnqueueMany(ctx, ps); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[string]jobs.Row{}
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[fetchedJob](func(_ context.Context, j *jobs.Job[fetchedJob]) error {
			mu.Lock()
			defer mu.Unlock()
			got[j.Args.Name] = *j.Row
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "every job run", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) == len(want)
		})
		mu.Lock()
		defer mu.Unlock()
		for name, o := range want {
			r := got[name]
			if r.Key != o.Key || !slices.Equal(r.Tags, o.Tags) || !maps.Equal(r.Meta, o.Meta) || r.Timeout != o.Timeout {
				t.Errorf("job %s ran with key %q, tags %q, meta %v, timeout %v; want %q, %q, %v, %v",
					name, r.Key, r.Tags, r.Meta, r.Timeout, o.Key, o.Tags, o.Meta, o.Timeout)
			}
		}
	})
}
