package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

// queueStats returns the stats of queue, or a zero QueueStats naming it.
func queueStats(t *testing.T, n *twice.Node, queue string) jobs.QueueStats {
	t.Helper()
	st, err := n.Jobs().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Queue == queue {
			return s
		}
	}
	return jobs.QueueStats{Queue: queue}
}

// exerciseQueues checks which queues an instance works: its workers' own, those its Config
// lists once it works at all, and the record of both that operators read.
func exerciseQueues(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ConfiguredQueueRunsWithAWorker", queuesConfiguredQueueRunsWithAWorker},
		{"ConfiguredQueueWaitsForAWorker", queuesConfiguredQueueWaitsForAWorker},
		{"EnqueueToAnUnworkedQueueIsLogged", queuesEnqueueToAnUnworkedQueueIsLogged},
		{"InvalidQueueConfig", queuesInvalidQueueConfig},
		{"StatsShowQueuesNobodyWorks", queuesStatsShowQueuesNobodyWorks},
		{"StatsShowTheLag", queuesStatsShowTheLag},
		{"ListFiltersByArguments", queuesListFiltersByArguments},
	})
}

// The README's case: a kind registered on the default queue, a job enqueued to "mail".
// Listing "mail" in a zero Config's Queues is a plain append, and starts the queue.
func queuesConfiguredQueueRunsWithAWorker(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := jobsFast()
	cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: "mail", Concurrency: 2})
	n := backend.node(t, db, "svc", cfg)
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	r, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "mail"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, n, r.ID, jobs.Completed)
}

// An instance that registers no worker only enqueues: the queues its Config lists wait
// for its first worker, so it takes no job it cannot run.
func queuesConfiguredQueueWaitsForAWorker(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	var cfg twice.Config
	cfg.Jobs = jobsFast().Jobs
	cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: "mail"})
	n := backend.node(t, db, "svc", cfg)
	r, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "mail"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * n.Jobs().Config().Poll) // several polls: nothing may be taken
	if row, err := n.Jobs().Get(ctx, r.ID); err != nil || row.State != jobs.Available || row.Attempt != 0 {
		t.Fatalf("a job of a configured queue was taken by an instance without workers: %+v %v", row, err)
	}
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	waitState(t, n, r.ID, jobs.Completed)
}

// An instance that runs workers and enqueues to a queue it does not work says so,
// once per queue; an instance that only enqueues says nothing.
func queuesEnqueueToAnUnworkedQueueIsLogged(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	logs := &queueLogs{}
	cfg := backend.config(jobsFast())
	cfg.DSN, cfg.Schema, cfg.Name, cfg.Logger = db.DSN, db.Schema, "svc", slog.New(logs)
	n, err := twice.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	for range 2 {
		if _, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "orphan"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := logs.count("orphan"); got != 0 {
		t.Errorf("an instance without workers logged %d times", got)
	}
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	for range 2 {
		if _, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "orphan"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := logs.count("orphan"); got != 1 {
		t.Errorf("logged %d times that queue orphan is not worked here, want once", got)
	}
}

func queuesInvalidQueueConfig(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	s := open(t, db, nil)
	for _, qs := range [][]jobs.QueueConfig{
		{{Name: ""}},
		{{Name: "mail"}, {Name: "mail"}},
		{{Name: "mail", Concurrency: -1}},
	} {
		if _, err := jobs.New(block.Deps{Store: s, Service: "svc", Instance: "i"}, jobs.Config{Queues: qs}); err == nil {
			t.Errorf("Queues %+v accepted", qs)
		}
	}
}

// Stats say how many live instances work each queue, so a queue with jobs and no
// worker shows; an instance that stops, or whose member row is gone, no longer counts.
func queuesStatsShowQueuesNobodyWorks(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a, b := backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast())
	mustRegister(t, a, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	mustRegister(t, b, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
	if _, err := a.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "orphan"}); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "both instances recorded as working the default queue", func() bool {
		return queueStats(t, a, jobs.DefaultQueue).Workers == 2
	})
	if st := queueStats(t, a, "orphan"); st.Workers != 0 || st.Available != 1 {
		t.Fatalf("a queue nobody works: %+v", st)
	}
	// A record left by an instance that is not alive (killed) is not counted, and is
	// forgotten once the cluster has reaped the instance.
	if _, err := a.Store().Exec(ctx, `INSERT INTO twice_queue_workers (service, queue, instance, started_at)
		VALUES ($1, $2, $3, $4)`, "svc", "orphan", "killed", a.Store().Dialect().TimeArg(time.Now())); err != nil {
		t.Fatal(err)
	}
	if st := queueStats(t, a, "orphan"); st.Workers != 0 {
		t.Fatalf("a dead instance counted as a worker: %+v", st)
	}
	if _, err := a.Jobs().Prune(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := a.Store().QueryRow(ctx, `SELECT count(*) FROM twice_queue_workers WHERE instance = 'killed'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("the record of a reaped instance was kept: %d %v", left, err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := queueStats(t, a, jobs.DefaultQueue); st.Workers != 1 {
		t.Fatalf("an instance that stopped still counts: %+v", st)
	}
}

// A queue's lag is how long its oldest due job has waited: a job due an hour ago in a
// queue nobody works shows it; jobs not due yet, and those of a worked queue, show none.
func queuesStatsShowTheLag(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	for _, at := range []time.Duration{-time.Hour, -time.Minute} {
		if _, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "stuck", RunAt: time.Now().Add(at)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "later", Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// The database's clock and this one's may differ a little: the bounds are loose.
	if st := queueStats(t, n, "stuck"); st.Available != 2 || st.Lag < 59*time.Minute || st.Lag > 2*time.Hour {
		t.Fatalf("a queue whose oldest job is due since an hour: %+v", st)
	}
	if st := queueStats(t, n, "later"); st.Scheduled != 1 || st.Lag != 0 {
		t.Fatalf("a queue whose only job is not due: %+v", st)
	}
}

// filed is a job whose arguments the list filters on.
type filed struct {
	User  string         `json:"user"`
	Order map[string]int `json:"order,omitempty"`
	Rush  bool           `json:"rush,omitempty"`
}

func (filed) Kind() string { return "filed" }

// The list's arguments filter matches the jobs whose arguments have each of its keys with
// the same value and type, the same on both stores; a filter that is not a JSON object of
// scalars is refused.
func queuesListFiltersByArguments(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	for _, a := range []filed{{User: "ann", Rush: true}, {User: "ann", Order: map[string]int{"id": 7}}, {User: "bob", Order: map[string]int{"id": 7, "n": 2}},
		{User: "o'neil \"q\""}} {
		if _, err := n.Jobs().Enqueue(ctx, a, &jobs.Opts{Queue: "filed"}); err != nil {
			t.Fatal(err)
		}
	}
	users := func(filter string) []string {
		t.Helper()
		rows, err := n.Jobs().List(ctx, jobs.ListParams{Kind: "filed", Args: json.RawMessage(filter)})
		if err != nil {
			t.Fatalf("filter %s: %v", filter, err)
		}
		var out []string
		for _, r := range slices.Backward(rows) {
			var a filed
			if err := json.Unmarshal(r.Args, &a); err != nil {
				t.Fatal(err)
			}
			out = append(out, a.User)
		}
		return out
	}
	for filter, want := range map[string][]string{
		`{"user": "ann"}`:               {"ann", "ann"},
		`{"user": "ann", "rush": true}`: {"ann"},
		`{"rush": 1}`:                   nil, // true is not 1
		`{"user": "o'neil \"q\""}`:      {`o'neil "q"`},
		`{"user": "carl"}`:              nil,
		`{}`:                            {"ann", "ann", "bob", `o'neil "q"`},
		`{"rush": null}`:                nil, // a key left out is not a null
	} {
		if got := users(filter); !slices.Equal(got, want) {
			t.Errorf("filter %s: %q, want %q", filter, got, want)
		}
	}
	for _, bad := range []string{`[1]`, `"ann"`, `{`, `null`, `{"order": {"id": 7}}`, `{"user": ["ann"]}`} {
		if _, err := n.Jobs().List(ctx, jobs.ListParams{Args: json.RawMessage(bad)}); !errors.Is(err, jobs.ErrInvalid) {
			t.Errorf("filter %s: %v, want ErrInvalid", bad, err)
		}
	}
}

// queueLogs counts the log records that name a queue.
type queueLogs struct {
	mu      sync.Mutex // protects byQueue
	byQueue map[string]int
}

func (h *queueLogs) Enabled(context.Context, slog.Level) bool { return true }
func (h *queueLogs) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *queueLogs) WithGroup(string) slog.Handler            { return h }

func (h *queueLogs) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "queue" && strings.Contains(r.Message, "does not work it") {
			h.mu.Lock()
			if h.byQueue == nil {
				h.byQueue = map[string]int{}
			}
			h.byQueue[a.Value.String()]++
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *queueLogs) count(queue string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byQueue[queue]
}
