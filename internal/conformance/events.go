package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// recorder collects what handlers received, per instance.
type recorder struct {
	mu    sync.Mutex // protects got, order
	got   map[string][]events.Event
	order []events.Event // everything, in order of arrival
	kick  chan struct{}
}

func newRecorder() *recorder {
	return &recorder{got: map[string][]events.Event{}, kick: make(chan struct{}, 1)}
}

func (r *recorder) add(who string, e events.Event) {
	r.mu.Lock()
	r.got[who] = append(r.got[who], e)
	r.order = append(r.order, e)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *recorder) handler(who string) func(context.Context, events.Event) error {
	return func(_ context.Context, e events.Event) error { r.add(who, e); return nil }
}

// all returns every event received by anyone, in order of arrival per instance.
func (r *recorder) all() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, evs := range r.got {
		out = append(out, evs...)
	}
	return out
}

func (r *recorder) of(who string) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[who])
}

// distinct counts distinct event ids in evs.
func distinct(evs []events.Event) int {
	seen := map[int64]bool{}
	for _, e := range evs {
		seen[e.ID] = true
	}
	return len(seen)
}

func msgs(topic string, n, keys int) []events.Message {
	out := make([]events.Message, n)
	for i := range out {
		out[i] = events.Message{Topic: topic, Key: "k" + strconv.Itoa(i%keys), Payload: []byte(strconv.Itoa(i))}
	}
	return out
}

// eventsSuite exercises publishing, the three kinds of consumer groups, replay, lag,
// retention and event-sourced streams.
func eventsSuite(t *testing.T, dialect store.Dialect) {
	eventsSuiteWith(t, dialect, fast)
}

// eventsSuiteWith runs the events suite on nodes with base's timings and bus.
func eventsSuiteWith(t *testing.T, dialect store.Dialect, base twice.Config) {
	ctx := context.Background()
	fast := base

	t.Run("SharedGroupSplitsWorkInOrderPerKey", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		nodes := []*twice.Node{node(t, db, "svc", fast), node(t, db, "svc", fast), node(t, db, "svc", fast)}
		rec := newRecorder()
		for i, n := range nodes {
			subscribe(t, n, events.GroupConfig{Name: "billing", Topics: []string{"order"}, Handle: rec.handler(strconv.Itoa(i)), Rebalance: 50 * time.Millisecond})
		}
		// Every instance gets its share of the partitions.
		eventually(t, 20*time.Second, "partitions spread evenly over three instances", func() bool {
			total := 0
			for _, n := range nodes {
				p := consumerOf(n, "billing").Partitions()
				if len(p) == 0 || len(p) > (events.DefaultPartitions+2)/3 {
					return false
				}
				total += len(p)
			}
			return total == events.DefaultPartitions
		})
		const n = 600
		all := msgs("order", n, 20)
		for i := 0; i < n; i += 100 {
			if _, err := nodes[i/100%3].Events().Publish(ctx, all[i:i+100]...); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 30*time.Second, "every event handled", func() bool { return distinct(rec.all()) == n })
		// Per key, events are handled in publish order. If a partition changed hands (a
		// lease lost on a loaded machine) the new owner repeats what was not yet
		// checkpointed, so the first time each event was handled is what must be in order.
		rec.mu.Lock()
		order := slices.Clone(rec.order)
		rec.mu.Unlock()
		seen := map[int64]bool{}
		last := map[string]int{}
		for _, e := range order {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			seq, _ := strconv.Atoi(string(e.Payload))
			if prev, ok := last[e.Key]; ok && seq < prev {
				t.Fatalf("key %s: event %d handled after %d", e.Key, seq, prev)
			}
			last[e.Key] = seq
		}
		if len(order) > n {
			t.Logf("%d deliveries of %d events: a partition changed hands", len(order), n)
		}
	})

	t.Run("SharedGroupSurvivesAnInstanceLeaving", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", fast), node(t, db, "svc", fast)
		rec := newRecorder()
		cfg := events.GroupConfig{Name: "g", Topics: []string{"t"}, Rebalance: 50 * time.Millisecond}
		cfg.Handle = rec.handler("a")
		subscribe(t, a, cfg)
		cfg.Handle = rec.handler("b")
		subscribe(t, b, cfg)
		eventually(t, 20*time.Second, "both hold partitions", func() bool {
			return len(consumerOf(a, "g").Partitions()) > 0 && len(consumerOf(b, "g").Partitions()) > 0
		})
		if _, err := a.Events().Publish(ctx, msgs("t", 50, 50)...); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "first batch", func() bool { return distinct(rec.all()) == 50 })
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "b takes every partition", func() bool {
			return len(consumerOf(b, "g").Partitions()) == events.DefaultPartitions
		})
		if _, err := b.Events().Publish(ctx, msgs("t", 50, 50)...); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "second batch, all on b", func() bool { return distinct(rec.all()) == 100 })
	})

	t.Run("ExactlyOnceEffects", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", fast), node(t, db, "svc", fast)
		if _, err := a.Store().Exec(ctx, "CREATE TABLE effects (event_id BIGINT NOT NULL, instance TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*twice.Node{a, b} {
			subscribe(t, n, events.GroupConfig{Name: "fx", Topics: []string{"pay"}, Mode: events.ExactlyOnce, Rebalance: 50 * time.Millisecond,
				HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
					_, err := tx.Exec(ctx, "INSERT INTO effects (event_id, instance) VALUES ($1, $2)", e.ID, n.ID())
					return err
				}})
		}
		const n = 300
		var ids []int64
		for i := 0; i < n; i += 50 {
			got, err := a.Events().Publish(ctx, msgs("pay", 50, 7)...)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, got...)
		}
		eventually(t, 30*time.Second, "every effect", func() bool { return count(t, a.Store(), "SELECT count(*) FROM effects") >= n })
		if dup := count(t, a.Store(), "SELECT count(*) FROM (SELECT event_id FROM effects GROUP BY event_id HAVING count(*) > 1) d"); dup != 0 {
			t.Fatalf("%d events took effect twice", dup)
		}
		// Each event the publisher was told about has its one effect.
		for _, id := range ids {
			if count(t, a.Store(), "SELECT count(*) FROM effects WHERE event_id = "+strconv.FormatInt(id, 10)) != 1 {
				t.Fatalf("event %d does not have exactly one effect", id)
			}
		}
		lag, err := a.Events().Lag(ctx, "fx")
		if err != nil || lag.Pending != 0 || len(lag.Partitions) != events.DefaultPartitions {
			t.Fatalf("Lag = %+v, %v", lag, err)
		}
	})

	t.Run("BroadcastReachesEveryInstance", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		nodes := []*twice.Node{node(t, db, "svc", fast), node(t, db, "svc", fast), node(t, db, "svc", fast)}
		if _, err := nodes[0].Events().Publish(ctx, events.Message{Topic: "cfg", Payload: []byte("before")}); err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		for i, n := range nodes {
			subscribe(t, n, events.GroupConfig{Name: "local", Topics: []string{"cfg"}, Mode: events.Broadcast, Handle: rec.handler(strconv.Itoa(i))})
		}
		if _, err := nodes[1].Events().Publish(ctx, msgs("cfg", 30, 3)...); err != nil {
			t.Fatal(err)
		}
		for i := range nodes {
			eventually(t, 20*time.Second, fmt.Sprintf("instance %d gets all", i), func() bool { return len(rec.of(strconv.Itoa(i))) >= 30 })
			for _, e := range rec.of(strconv.Itoa(i)) {
				if string(e.Payload) == "before" {
					t.Fatalf("instance %d got an event from before it subscribed", i)
				}
			}
		}
	})

	t.Run("PublishTxOnlyOnCommit", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", fast), node(t, db, "svc", fast)
		rec := newRecorder()
		subscribe(t, b, events.GroupConfig{Name: "g", Topics: []string{"t"}, Handle: rec.handler("b")})
		tx, err := a.Store().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Events().PublishTx(ctx, tx, events.Message{Topic: "t", Payload: []byte("rolled back")}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		err = a.Store().InTx(ctx, func(tx store.Tx) error {
			_, err := a.Events().PublishTx(ctx, tx, events.Message{Topic: "t", Key: "k", Payload: []byte("committed"), Headers: map[string]string{"type": "Thing"}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the committed event", func() bool { return len(rec.all()) > 0 })
		if _, err := a.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("marker")}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the marker", func() bool { return len(rec.all()) >= 2 })
		got := rec.all()
		if len(got) != 2 || string(got[0].Payload) != "committed" || got[0].Key != "k" || got[0].Headers["type"] != "Thing" || got[0].At.IsZero() {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("RetriesThenDeadLetter", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		rec := newRecorder()
		var mu sync.Mutex
		attempts := map[string]int{}
		subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 1, MaxAttempts: 3, RetryBackoff: time.Millisecond,
			Handle: func(ctx context.Context, e events.Event) error {
				mu.Lock()
				attempts[string(e.Payload)]++
				n := attempts[string(e.Payload)]
				mu.Unlock()
				switch string(e.Payload) {
				case "poison":
					return errors.New("cannot handle poison")
				case "flaky":
					if n < 2 {
						panic("flaky handler")
					}
				}
				rec.add("a", e)
				return nil
			}})
		ids, err := a.Events().Publish(ctx,
			events.Message{Topic: "t", Payload: []byte("first")}, events.Message{Topic: "t", Payload: []byte("poison")},
			events.Message{Topic: "t", Payload: []byte("flaky")}, events.Message{Topic: "t", Payload: []byte("last")})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the events after the poison", func() bool { return len(rec.all()) == 3 })
		dead, err := a.Events().DeadLetters(ctx, "g", 0, 0)
		if err != nil || len(dead) != 1 || dead[0].EventID != ids[1] || dead[0].Attempts != 3 {
			t.Fatalf("DeadLetters = %+v, %v", dead, err)
		}
		mu.Lock()
		defer mu.Unlock()
		// Attempts are counted by the partition's owner. On a loaded machine the partition
		// lease can change hands mid-retry and the new owner starts again (at least once),
		// so more attempts are allowed; fewer never are, and the dead letter (above) records
		// exactly MaxAttempts.
		if attempts["poison"] < 3 || attempts["flaky"] < 2 || attempts["first"] < 1 {
			t.Fatalf("attempts %v", attempts)
		}
	})

	t.Run("ExactlyOnceDeadLetterCommitsWithCheckpoint", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		if _, err := a.Store().Exec(ctx, "CREATE TABLE effects (payload TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		tries := 0
		subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Mode: events.ExactlyOnce, Partitions: 1,
			MaxAttempts: 2, RetryBackoff: time.Millisecond,
			HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
				// The effect is written before the failure: it must roll back.
				if _, err := tx.Exec(ctx, "INSERT INTO effects (payload) VALUES ($1)", string(e.Payload)); err != nil {
					return err
				}
				if string(e.Payload) == "poison" {
					mu.Lock()
					tries++
					mu.Unlock()
					return errors.New("poison")
				}
				return nil
			}})
		ids, err := a.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("a")}, events.Message{Topic: "t", Payload: []byte("poison")},
			events.Message{Topic: "t", Payload: []byte("b")})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the group past the poison", func() bool {
			lag, err := a.Events().Lag(ctx, "g")
			return err == nil && lag.Pending == 0
		})
		if n := count(t, a.Store(), "SELECT count(*) FROM effects WHERE payload = 'poison'"); n != 0 {
			t.Fatalf("%d effects of the failed event committed", n)
		}
		if n := count(t, a.Store(), "SELECT count(*) FROM effects"); n != 2 {
			t.Fatalf("%d effects, want 2", n)
		}
		dead, err := a.Events().DeadLetters(ctx, "g", 0, 0)
		if err != nil || len(dead) != 1 || dead[0].EventID != ids[1] || dead[0].Attempts != 2 {
			t.Fatalf("DeadLetters = %+v, %v", dead, err)
		}
		mu.Lock()
		defer mu.Unlock()
		// Once in the batch, then twice alone.
		if tries != 3 {
			t.Fatalf("poison tried %d times, want 3", tries)
		}
	})

	t.Run("ReplayFromIDAndTime", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		clock := testdb.NewClock()
		cfg := fast
		cfg.Clock = clock
		a := node(t, db, "svc", cfg)
		ids1, err := a.Events().Publish(ctx, msgs("t", 5, 1)...)
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Hour)
		mark := clock.Now()
		ids2, err := a.Events().Publish(ctx, msgs("t", 5, 1)...)
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		c := subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2, Handle: rec.handler("a")})
		eventually(t, 20*time.Second, "first pass", func() bool { return len(rec.all()) == 10 })
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Events().Replay(ctx, "g", &events.ReplayOpts{FromTime: mark}); err != nil {
			t.Fatal(err)
		}
		if lag, err := a.Events().Lag(ctx, "g"); err != nil || lag.Pending != 5 {
			t.Fatalf("after replay from time: %+v, %v", lag, err)
		}
		if err := a.Events().Replay(ctx, "g", &events.ReplayOpts{FromID: ids1[3]}); err != nil {
			t.Fatal(err)
		}
		if lag, err := a.Events().Lag(ctx, "g"); err != nil || lag.Pending != 7 {
			t.Fatalf("after replay from id: %+v, %v", lag, err)
		}
		rec2 := newRecorder()
		subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2, Handle: rec2.handler("a")})
		eventually(t, 20*time.Second, "second pass", func() bool { return len(rec2.all()) == 7 })
		want := append(ids1[3:], ids2...)
		var got []int64
		for _, e := range rec2.all() {
			got = append(got, e.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("replayed %v, want %v", got, want)
		}
		if err := a.Events().Replay(ctx, "nope", nil); !errors.Is(err, events.ErrNoGroup) {
			t.Fatalf("Replay of an unknown group: %v", err)
		}
	})

	t.Run("ReplayReachesARunningGroup", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		rec := newRecorder()
		subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 1, Handle: rec.handler("a")})
		if _, err := a.Events().Publish(ctx, msgs("t", 3, 1)...); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "first pass", func() bool { return len(rec.all()) == 3 })
		if err := a.Events().Replay(ctx, "g", nil); err != nil {
			t.Fatal(err)
		}
		// The idle reader notices at its next poll (1 s by default).
		eventually(t, 30*time.Second, "the replay", func() bool { return len(rec.all()) == 6 })
	})

	t.Run("RetentionKeepsStreams", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		clock := testdb.NewClock()
		cfg := fast
		cfg.Clock = clock
		cfg.Events.Retention = time.Hour
		a := node(t, db, "svc", cfg)
		old, err := a.Events().Publish(ctx, msgs("t", 4, 1)...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Events().Append(ctx, "order-1", events.NoStream, events.Message{Payload: []byte("placed")}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Hour)
		fresh, err := a.Events().Publish(ctx, msgs("t", 1, 1)...)
		if err != nil {
			t.Fatal(err)
		}
		// The leader prunes too; between it and this call, the four old events go.
		if n, err := a.Events().Prune(ctx); err != nil || n > 4 {
			t.Fatalf("Prune = %d, %v", n, err)
		}
		for _, id := range old {
			if _, err := a.Events().Get(ctx, id); !errors.Is(err, events.ErrNotFound) {
				t.Fatalf("old event %d: %v", id, err)
			}
		}
		if _, err := a.Events().Get(ctx, fresh[0]); err != nil {
			t.Fatalf("fresh event pruned: %v", err)
		}
		if evs, err := a.Events().Load(ctx, "order-1", nil); err != nil || len(evs) != 1 {
			t.Fatalf("stream pruned: %d, %v", len(evs), err)
		}
	})

	t.Run("Limits", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		for name, m := range map[string]events.Message{
			"empty topic":   {},
			"long topic":    {Topic: string(make([]byte, events.MaxTopic+1))},
			"long key":      {Topic: "t", Key: string(make([]byte, events.MaxKey+1))},
			"big payload":   {Topic: "t", Payload: make([]byte, events.DefaultMaxPayload+1)},
			"bad header":    {Topic: "t", Headers: map[string]string{"": "x"}},
			"invalid utf-8": {Topic: "t\xff"},
		} {
			if _, err := a.Events().Publish(ctx, m); !errors.Is(err, events.ErrInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if _, err := a.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"t"}}); err == nil {
			t.Error("group without a handler accepted")
		}
		subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Handle: func(context.Context, events.Event) error { return nil }})
		if _, err := a.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"other"},
			Handle: func(context.Context, events.Event) error { return nil }}); err == nil {
			t.Error("a group's topics changed")
		}
	})

	t.Run("StreamsAndProjection", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", fast), node(t, db, "svc", fast)
		if _, err := a.Store().Exec(ctx, "CREATE TABLE order_view (stream TEXT PRIMARY KEY, status TEXT NOT NULL, version BIGINT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		v, err := a.Events().Append(ctx, "order-1", events.NoStream,
			events.Message{Payload: []byte("placed")}, events.Message{Payload: []byte("paid")})
		if err != nil || v != 2 {
			t.Fatalf("Append = %d, %v", v, err)
		}
		_, err = a.Events().Append(ctx, "order-1", 1, events.Message{Payload: []byte("cancelled")})
		var conflict *events.ConflictError
		if !errors.As(err, &conflict) || !errors.Is(err, events.ErrConflict) || conflict.Actual != 2 || conflict.Expected != 1 {
			t.Fatalf("stale append: %v", err)
		}
		// Concurrent appenders at one version: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for i := range 8 {
			n := []*twice.Node{a, b}[i%2]
			wg.Go(func() {
				_, err := n.Events().Append(ctx, "order-1", 2, events.Message{Payload: []byte("shipped")})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, events.ErrConflict):
					conflicts++
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || conflicts != 7 {
			t.Fatalf("%d appends won and %d conflicted; want 1 and 7", wins, conflicts)
		}
		evs, err := b.Events().Load(ctx, "order-1", nil)
		if err != nil || len(evs) != 3 || evs[2].Version != 3 || evs[0].Topic != "order" || evs[0].Key != "order-1" {
			t.Fatalf("Load = %+v, %v", evs, err)
		}
		if evs, err := b.Events().Load(ctx, "order-1", &events.LoadOpts{After: 2}); err != nil || len(evs) != 1 {
			t.Fatalf("Load after 2 = %d, %v", len(evs), err)
		}
		// A projection: an exactly-once group writing the read model in its transaction.
		for _, n := range []*twice.Node{a, b} {
			subscribe(t, n, events.GroupConfig{Name: "order-view", Topics: []string{"order"}, Mode: events.ExactlyOnce, Rebalance: 50 * time.Millisecond,
				HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
					_, err := tx.Exec(ctx, `INSERT INTO order_view (stream, status, version) VALUES ($1, $2, $3)
						ON CONFLICT (stream) DO UPDATE SET status = excluded.status, version = excluded.version
						WHERE order_view.version < excluded.version`, e.Stream, string(e.Payload), e.Version)
					return err
				}})
		}
		for i := range 20 {
			if _, err := a.Events().Append(ctx, fmt.Sprintf("order-%d", i+2), events.NoStream,
				events.Message{Payload: []byte("placed")}, events.Message{Payload: []byte("paid")}); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 30*time.Second, "read model caught up", func() bool {
			return count(t, a.Store(), "SELECT count(*) FROM order_view WHERE status IN ('paid', 'shipped')") == 21
		})
	})

	t.Run("CommitOrderNeverSkips", func(t *testing.T) {
		t.Parallel()
		commitOrder(t, dialect, fast)
	})
}

// subscribe starts a group on n, closed when t ends.
func subscribe(t *testing.T, n *twice.Node, cfg events.GroupConfig) *events.Consumer {
	t.Helper()
	c, err := n.Events().Subscribe(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	consumersMu.Lock()
	consumers[consumerKey{n, cfg.Name}] = c
	consumersMu.Unlock()
	return c
}

type consumerKey struct {
	n    *twice.Node
	name string
}

var (
	consumersMu sync.Mutex
	consumers   = map[consumerKey]*events.Consumer{}
)

func consumerOf(n *twice.Node, name string) *events.Consumer {
	consumersMu.Lock()
	defer consumersMu.Unlock()
	return consumers[consumerKey{n, name}]
}

func count(t *testing.T, s *store.Store, query string) int {
	t.Helper()
	var n int
	if err := s.Reader().QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// commitOrder runs many writers whose transactions commit in a different order than they
// took their ids, some rolling back, while a consumer reads; the consumer must end with
// every committed event exactly once and none of the rolled-back ones. A reader that
// trusted the id order would pass ids whose transactions were still open and skip them.
func commitOrder(t *testing.T, dialect store.Dialect, fast twice.Config) {
	ctx := context.Background()
	db := testdb.New(t, dialect)
	a, b := node(t, db, "svc", fast), node(t, db, "svc", fast)
	rec := newRecorder()
	subscribe(t, b, events.GroupConfig{Name: "reader", Topics: []string{"t"}, Partitions: 1, BatchSize: 7, Handle: rec.handler("b")})
	writers, perWriter := 12, 25
	if dialect == store.SQLite {
		// One writer at a time: the delays serialise, so fewer of them.
		writers, perWriter = 4, 15
	}
	var mu sync.Mutex
	var committed []int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				var ids []int64
				rollback := rand.IntN(5) == 0
				err := a.Store().InTx(ctx, func(tx store.Tx) error {
					var err error
					ids, err = a.Events().PublishTx(ctx, tx, events.Message{Topic: "t", Key: strconv.Itoa(w), Payload: []byte(strconv.Itoa(i))})
					if err != nil {
						return err
					}
					time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
					if rollback {
						return errRollback
					}
					return nil
				})
				switch {
				case errors.Is(err, errRollback):
				case err != nil:
					t.Error(err)
					return
				default:
					mu.Lock()
					committed = append(committed, ids...)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 30*time.Second, "every committed event", func() bool { return distinct(rec.all()) >= len(committed) })
	// A marker after everything: once it arrives, nothing else may still be missing.
	if _, err := a.Events().Publish(ctx, events.Message{Topic: "t", Key: "marker"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the marker", func() bool { return distinct(rec.all()) == len(committed)+1 })
	got := map[int64]int{}
	for _, e := range rec.of("b") {
		got[e.ID]++
	}
	for _, id := range committed {
		if got[id] != 1 {
			t.Errorf("committed event %d delivered %d times", id, got[id])
		}
	}
	// committed is in order of commit: count the events that committed after an event with
	// a higher id, which a reader trusting ids would have skipped.
	late := 0
	var highest int64
	for _, id := range committed {
		if id < highest {
			late++
		}
		highest = max(highest, id)
	}
	t.Logf("%d events committed by %d writers, each delivered once; %d committed after a higher id", len(committed), writers, late)
	if dialect == store.Postgres && late == 0 {
		t.Error("no event committed after a higher id: the test did not exercise late commits")
	}
}

var errRollback = errors.New("rollback on purpose")
