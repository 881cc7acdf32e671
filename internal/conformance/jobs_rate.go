package conformance

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

// exerciseJobsRate checks a queue's rate limit: exact across instances, for the whole
// queue and per value of a field of the jobs' args.
func exerciseJobsRate(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"HoldsAcrossInstances", jobsRateAcrossInstances},
		{"PerField", jobsRatePerField},
		{"SetRateLimit", jobsSetRateLimit},
	})
}

// rated is a job of the rate-limited queue, for one customer.
type rated struct {
	Customer string `json:"customer"`
	N        int    `json:"n"`
}

func (rated) Kind() string    { return "rated" }
func (rated) Opts() jobs.Opts { return jobs.Opts{Queue: "rated"} }

// starts records the starts of rated jobs: when each attempt began by the database's
// clock (the job's AttemptedAt, the time its fetch counted it at), and by this process's.
type starts struct {
	mu   sync.Mutex // protects db, here
	db   map[string][]time.Time
	here []time.Time
}

// register makes every node work rated jobs, recording their starts.
func (s *starts) register(t *testing.T, nodes []*twice.Node) {
	s.db = map[string][]time.Time{}
	for _, n := range nodes {
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[rated]) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.db[job.Args.Customer] = append(s.db[job.Args.Customer], job.AttemptedAt)
			s.here = append(s.here, time.Now())
			return nil
		})
	}
}

func (s *starts) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.here)
}

// check fails t if more than limit of the starts of one customer fall in a window of
// period by the database's clock, at which the limit counts them: in any window (the
// sliding check), and so in each period counted from the first start (the counter of
// starts per period, logged). The workers see each start a fetch's commit later, a few
// milliseconds that vary; the count they saw is logged beside.
func (s *starts) check(t *testing.T, limit int, period time.Duration) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for customer, at := range s.db {
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		for i := limit; i < len(at); i++ {
			if gap := at[i].Sub(at[i-limit]); gap < period {
				t.Errorf("customer %q: %d starts within %v (from %v to %v), limit %d per %v",
					customer, limit+1, gap, at[i-limit].Format(time.StampMicro), at[i].Format(time.StampMicro), limit, period)
				break
			}
		}
		per := perPeriod(at, period)
		if slices.Max(per) > limit {
			t.Errorf("customer %q: starts per %v %v, limit %d", customer, period, per, limit)
		}
		t.Logf("customer %q: starts per %v %v", customer, period, per)
	}
	slices.SortFunc(s.here, func(a, b time.Time) int { return a.Compare(b) })
	t.Logf("all customers: starts per %v as the workers saw them %v", period, perPeriod(s.here, period))
}

// perPeriod counts the times at (sorted) per period from the first.
func perPeriod(at []time.Time, period time.Duration) []int {
	var per []int
	for _, t := range at {
		i := int(t.Sub(at[0]) / period)
		for len(per) <= i {
			per = append(per, 0)
		}
		per[i]++
	}
	return per
}

// enqueueRated enqueues n jobs for each customer, interleaved.
func enqueueRated(t *testing.T, n *twice.Node, count int, customers ...string) {
	var params []jobs.Params
	for i := range count {
		for _, c := range customers {
			params = append(params, jobs.Params{Args: rated{Customer: c, N: i}})
		}
	}
	if _, err := n.Jobs().EnqueueMany(context.Background(), params); err != nil {
		t.Fatal(err)
	}
}

// Three instances, of which only one is configured with the limit, never start more than
// 4 jobs of the queue in any 300 ms together.
func jobsRateAcrossInstances(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	limit := jobs.RateLimit{Limit: 4, Period: 300 * time.Millisecond}
	nodes := queueNodes(t, backend, db, 3, func(i int, q *jobs.QueueConfig) {
		q.Name, q.Concurrency = "rated", 10
		if i == 0 {
			q.RateLimit = limit
		}
	})
	var s starts
	s.register(t, nodes)
	testnode.Eventually(t, 10*time.Second, "the limit stored with the queue", func() bool {
		return storedQueue(t, nodes[2], "rated").RateLimit == limit
	})
	begin := time.Now()
	enqueueRated(t, nodes[1], 24, "")
	testnode.Eventually(t, 60*time.Second, "every rated job ran", func() bool { return s.count() == 24 })
	s.check(t, limit.Limit, limit.Period)
	// 24 starts at 4 per 300 ms take 5 full windows after the first: a lower bound, which
	// the limit guarantees however fast the machine.
	if took, least := time.Since(begin), 5*limit.Period; took < least {
		t.Errorf("24 jobs ran in %v; the limit allows no less than %v", took, least)
	}
}

// A limit per customer holds for each customer, and one customer at its limit does not
// hold back the others.
func jobsRatePerField(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	limit := jobs.RateLimit{Limit: 2, Period: 250 * time.Millisecond, ByField: "customer"}
	nodes := queueNodes(t, backend, db, 3, func(_ int, q *jobs.QueueConfig) {
		q.Name, q.Concurrency, q.RateLimit = "rated", 10, limit
	})
	var s starts
	s.register(t, nodes)
	enqueueRated(t, nodes[0], 8, "acme", "globex", "initech")
	testnode.Eventually(t, 60*time.Second, "every rated job ran", func() bool { return s.count() == 24 })
	s.check(t, limit.Limit, limit.Period)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Each customer's 8 jobs need 3 windows after the first; run one customer after the
	// other, they would need 11. The customers' runs overlap: each began before any ended.
	var lastStart, firstEnd time.Time
	for customer, at := range s.db {
		if len(at) != 8 {
			t.Errorf("customer %s: %d starts, want 8", customer, len(at))
			continue
		}
		if lastStart.IsZero() || at[0].After(lastStart) {
			lastStart = at[0]
		}
		if firstEnd.IsZero() || at[7].Before(firstEnd) {
			firstEnd = at[7]
		}
	}
	if !lastStart.Before(firstEnd) {
		t.Errorf("one customer's jobs waited for another's: a customer's first start at %v, another's last at %v",
			lastStart.Format(time.StampMicro), firstEnd.Format(time.StampMicro))
	}
}

// SetRateLimit validates, is seen by every instance, and removing it lets the queue run
// unlimited again.
func jobsSetRateLimit(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	nodes := queueNodes(t, backend, db, 3, func(_ int, q *jobs.QueueConfig) { q.Name, q.Concurrency = "rated", 10 })
	for _, bad := range []jobs.RateLimit{{Limit: -1, Period: time.Second}, {Limit: 1}, {Limit: 1, Period: time.Microsecond},
		{Limit: 1, Period: 25 * time.Hour}, {Period: time.Second}, {Limit: 1, Period: time.Second, ByField: "a.b"},
		{Limit: 1, Period: time.Second, ByField: "x' OR '1"}} {
		if err := nodes[0].Jobs().SetRateLimit(ctx, "rated", bad); !errors.Is(err, jobs.ErrInvalid) {
			t.Errorf("SetRateLimit(%+v): %v; want ErrInvalid", bad, err)
		}
	}
	var s starts
	s.register(t, nodes)
	limit := jobs.RateLimit{Limit: 3, Period: time.Hour}
	if err := nodes[2].Jobs().SetRateLimit(ctx, "rated", limit); err != nil {
		t.Fatal(err)
	}
	if got := storedQueue(t, nodes[0], "rated").RateLimit; got != limit {
		t.Fatalf("stored rate limit %v, want %v", got, limit)
	}
	enqueueRated(t, nodes[0], 5, "")
	testnode.Eventually(t, 30*time.Second, "3 jobs ran", func() bool { return s.count() == 3 })
	time.Sleep(5 * nodes[0].Jobs().Config().Poll) // several polls: nothing more may start
	if n := s.count(); n != 3 {
		t.Fatalf("%d jobs started under a limit of 3 per hour", n)
	}
	if err := nodes[2].Jobs().SetRateLimit(ctx, "rated", jobs.RateLimit{}); err != nil {
		t.Fatal(err)
	}
	if got := storedQueue(t, nodes[0], "rated").RateLimit; got != (jobs.RateLimit{}) {
		t.Fatalf("rate limit %v after removing it", got)
	}
	testnode.Eventually(t, 30*time.Second, "the other 2 ran once the limit was removed", func() bool { return s.count() == 5 })
}
