package jobs

import "testing"

// completedFrom finds each recorded id's result in the batch, sorted by id as the engine
// sorts it, whatever order the statement returned the ids in.
func TestCompletedFromFindsEachResult(t *testing.T) {
	batch := []result{
		{id: 3, queue: "a"},
		{id: 7, queue: "b", batchID: 70},
		{id: 9, queue: "c"},
		{id: 12, queue: "a", batchID: 120},
	}
	done := completedFrom(batch, []int64{12, 3, 7})
	if len(done) != 3 {
		t.Fatalf("got %d finished, want 3", len(done))
	}
	want := map[int64]struct {
		queue string
		batch int64
	}{12: {"a", 120}, 3: {"a", 0}, 7: {"b", 70}}
	for _, f := range done {
		w := want[f.id]
		var b int64
		if f.batchID != nil {
			b = *f.batchID
		}
		if f.queue != w.queue || b != w.batch || f.state != bitCompleted {
			t.Errorf("job %d: queue %q batch %d state %d, want queue %q batch %d completed", f.id, f.queue, b, f.state, w.queue, w.batch)
		}
	}
}

// A batch that takes everything pending takes its array; once recorded, the array comes
// back for the next results, and a batch that takes only part leaves the rest pending.
func TestCompleterReusesTheArrayOfARecordedBatch(t *testing.T) {
	k := &completer{c: &Client{cfg: Config{CompleteBatch: 3}}}
	for i := range 5 {
		k.pending = append(k.pending, result{id: int64(i + 1), queue: "q"})
	}
	first := k.take()
	if len(first) != 3 || len(k.pending) != 2 || k.pending[0].id != 4 {
		t.Fatalf("took %d, left %d pending; want 3 and 2 from job 4", len(first), len(k.pending))
	}
	k.reuse(first) // a prefix of the array pending is in, capped at its end: appending to it leaves pending alone
	second := k.take()
	if len(second) != 2 || second[0].id != 4 || len(k.pending) != 0 {
		t.Fatalf("took %v, left %d pending; want jobs 4 and 5 and nothing", second, len(k.pending))
	}
	if k.take() != nil {
		t.Fatal("an empty take returned a batch")
	}
	k.reuse(second)
	if cap(k.spare) != cap(second) {
		t.Fatalf("spare has capacity %d, want the recorded batch's %d", cap(k.spare), cap(second))
	}
	// The second take left pending in the first batch's array; the third takes that and
	// leaves pending in the second's.
	k.pending = append(k.pending, result{id: 6})
	third := k.take()
	k.pending = append(k.pending, result{id: 7})
	if len(third) != 1 || third[0].id != 6 || &third[0] != &first[:1][0] {
		t.Fatalf("took %v, want job 6 in the first batch's array", third)
	}
	if len(k.pending) != 1 || k.pending[0].id != 7 || &k.pending[0] != &second[:1][0] {
		t.Fatalf("pending %v, want job 7 in the second batch's array", k.pending)
	}
	if first[:3][1] != (result{}) || second[:2][1] != (result{}) {
		t.Error("a recorded batch was not cleared")
	}

	k.closed = true
	k.reuse(third)
	if k.spare != nil {
		t.Error("a closed completer kept an array")
	}
}
