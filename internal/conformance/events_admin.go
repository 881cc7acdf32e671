package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// exerciseEventsAdmin checks what an operator reads and does: the log's topics, and the
// replay of one dead letter, which leaves the group's other dead letters and its
// checkpoints alone, whether a reader runs or not.
func exerciseEventsAdmin(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"Topics", eventsTopics},
		{"ReplayOneDeadLetter", eventsReplayOneDeadLetter},
		{"ReplayDeadLetterExactlyOnce", eventsReplayDeadLetterExactlyOnce},
	})
}

func eventsTopics(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Calm())
	other := backend.node(t, db, "other", testnode.Calm())
	if ts, err := a.Events().Topics(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("Topics of an empty log = %+v, %v", ts, err)
	}
	idsA, err := a.Events().Publish(ctx, msgs("a", 3, 3)...)
	if err != nil {
		t.Fatal(err)
	}
	idsB, err := a.Events().Publish(ctx, msgs("b", 2, 1)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Events().Publish(ctx, msgs("a", 4, 1)...); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Events().Publish(ctx, msgs("z", 1, 1)...); err != nil {
		t.Fatal(err)
	}
	// Past the count's limit: counted up to it, with More.
	for range 2 {
		if _, err := a.Events().Publish(ctx, msgs("c", events.TopicCountLimit/2+1, 7)...); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := a.Events().Topics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(ts))
	for i, s := range ts {
		got[i] = fmt.Sprintf("%s %d %v", s.Topic, s.Events, s.More)
		if s.LatestAt.IsZero() || time.Since(s.LatestAt) > time.Hour {
			t.Errorf("topic %s: latest at %v", s.Topic, s.LatestAt)
		}
	}
	want := []string{"a 3 false", "b 2 false", fmt.Sprintf("c %d true", events.TopicCountLimit)}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("Topics = %v, want %v", got, want)
	}
	if ts[0].LatestID != idsA[2] || ts[1].LatestID != idsB[1] {
		t.Errorf("latest ids %d, %d; want %d, %d", ts[0].LatestID, ts[1].LatestID, idsA[2], idsB[1])
	}
}

// poisonGroup is a handler that fails on the events whose payload starts with "poison"
// until they are cured, and counts what it handled.
type poisonGroup struct {
	mu      sync.Mutex // protects cured, handled
	cured   map[int64]bool
	handled map[int64]int
}

func newPoisonGroup() *poisonGroup {
	return &poisonGroup{cured: map[int64]bool{}, handled: map[int64]int{}}
}

func (p *poisonGroup) handle(_ context.Context, e events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if strings.HasPrefix(string(e.Payload), "poison") && !p.cured[e.ID] {
		return errors.New("poisoned")
	}
	p.handled[e.ID]++
	return nil
}

func (p *poisonGroup) cure(id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cured[id] = true
}

func (p *poisonGroup) count(id int64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handled[id]
}

// deadIDs lists the group's dead letters as "id" or "id replaying", with their attempts.
func deadIDs(t *testing.T, l *events.Log, group string) []string {
	t.Helper()
	dead, err := l.DeadLetters(context.Background(), group, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, d := range dead {
		s := fmt.Sprintf("%d×%d", d.EventID, d.Attempts)
		if d.Replaying {
			s += " replaying"
		}
		out = append(out, s)
	}
	return out
}

func eventsReplayOneDeadLetter(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	// Steady timings: a shared group is at least once, and a partition lost under load
	// would hand an event out twice, past the exact counts below.
	a := backend.node(t, db, "svc", testnode.Steady())
	p := newPoisonGroup()
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2, MaxAttempts: 1, Handle: p.handle})
	var ms []events.Message
	for i, payload := range []string{"ok", "poison", "ok", "poison", "ok"} {
		ms = append(ms, events.Message{Topic: "t", Key: fmt.Sprint(i), Payload: []byte(payload)})
	}
	ids, err := a.Events().Publish(ctx, ms...)
	if err != nil {
		t.Fatal(err)
	}
	poison1, poison2 := ids[1], ids[3]
	testnode.Eventually(t, 20*time.Second, "the group past every event", func() bool {
		lag, err := a.Events().Lag(ctx, "g")
		return err == nil && lag.Pending == 0 && lag.DeadLetters == 2
	})
	// Both are cured; only the one replayed is handled again.
	p.cure(poison1)
	p.cure(poison2)
	if err := a.Events().ReplayDeadLetter(ctx, "g", poison1); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d×1", poison2)
	testnode.Eventually(t, 20*time.Second, "the dead letter replayed", func() bool {
		return p.count(poison1) == 1 && strings.Join(deadIDs(t, a.Events(), "g"), ",") == want
	})
	if err := a.Events().ReplayDeadLetter(ctx, "g", poison1); !errors.Is(err, events.ErrNoDeadLetter) {
		t.Errorf("a replayed dead letter replayed again: %v", err)
	}
	if err := a.Events().ReplayDeadLetter(ctx, "g", ids[0]); !errors.Is(err, events.ErrNoDeadLetter) {
		t.Errorf("an event handled replayed as a dead letter: %v", err)
	}
	// A replay that fails for good again leaves the dead letter, its attempts added.
	p.mu.Lock()
	delete(p.cured, poison2)
	p.mu.Unlock()
	if err := a.Events().ReplayDeadLetter(ctx, "g", poison2); err != nil {
		t.Fatal(err)
	}
	want = fmt.Sprintf("%d×2", poison2)
	testnode.Eventually(t, 20*time.Second, "the replay failed again", func() bool {
		return strings.Join(deadIDs(t, a.Events(), "g"), ",") == want
	})
	// The checkpoints did not move: every other event was handled once.
	for i, id := range ids {
		if want := map[bool]int{true: 1}[i != 3]; p.count(id) != want {
			t.Errorf("event %d (%s) handled %d times, want %d", id, ms[i].Payload, p.count(id), want)
		}
	}
}

func eventsReplayDeadLetterExactlyOnce(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Steady())
	if _, err := a.Store().Exec(ctx, "CREATE TABLE effects (payload TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	var cured sync.Map
	cfg := events.GroupConfig{Name: "g", Topics: []string{"t"}, Mode: events.ExactlyOnce, Partitions: 1,
		MaxAttempts: 2, RetryBackoff: time.Millisecond,
		HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
			if _, err := tx.Exec(ctx, "INSERT INTO effects (payload) VALUES ($1)", string(e.Payload)); err != nil {
				return err
			}
			if _, ok := cured.Load(e.ID); string(e.Payload) == "poison" && !ok {
				return errors.New("poison")
			}
			return nil
		}}
	c := subscribe(t, a, cfg)
	dead := poisonDeadLettered(t, a, 2)
	// With no reader running, the replay waits for one, shown as asked.
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cured.Store(dead.EventID, true)
	if err := a.Events().ReplayDeadLetter(ctx, "g", dead.EventID); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(deadIDs(t, a.Events(), "g"), ","), fmt.Sprintf("%d×2 replaying", dead.EventID); got != want {
		t.Fatalf("dead letters %s, want %s", got, want)
	}
	if err := a.Events().ReplayDeadLetter(ctx, "nope", dead.EventID); !errors.Is(err, events.ErrNoDeadLetter) {
		t.Errorf("the replay of a dead letter of an unknown group: %v", err)
	}
	subscribe(t, a, cfg)
	testnode.Eventually(t, 20*time.Second, "the dead letter handled", func() bool {
		return count(t, a.Store(), "SELECT count(*) FROM effects WHERE payload = 'poison'") == 1 && len(deadIDs(t, a.Events(), "g")) == 0
	})
	if k := count(t, a.Store(), "SELECT count(*) FROM effects"); k != 3 {
		t.Fatalf("%d effects, want 3: the checkpoint moved", k)
	}
}
