package events

import "testing"

func TestByteBudget(t *testing.T) {
	b := newByteBudget(10)
	if !b.acquire(10, nil, nil) {
		t.Fatal("the whole budget could not be taken")
	}
	// A waiter gives up when its worker stops.
	quit := make(chan struct{})
	gaveUp := make(chan bool)
	go func() { gaveUp <- b.acquire(5, quit, nil) }()
	close(quit)
	if <-gaveUp {
		t.Fatal("a read took bytes that were not free")
	}
	// A waiter proceeds once enough comes back.
	got := make(chan bool)
	go func() { got <- b.acquire(5, nil, nil) }()
	b.release(4)
	b.release(6)
	if !<-got {
		t.Fatal("a waiter did not proceed after the bytes came back")
	}
	// A read whose one event was larger than its share takes more than it was granted;
	// the group is then short until it is released.
	b.release(-7) // free: 10 - 5 - 7 = -2
	if b.free != -2 {
		t.Fatalf("free %d after an oversized read, want -2", b.free)
	}
	b.release(12)
	if b.free != 10 || b.waiting != 0 {
		t.Fatalf("free %d, waiting %d at the end", b.free, b.waiting)
	}
}

func TestReadLimit(t *testing.T) {
	for _, c := range []struct{ batch, budget, avg, want int }{
		{100, 4 << 20, 200, 100},           // small events: the batch size
		{100, 4 << 20, 0, 100},             // empty payloads
		{100, 4 << 20, 1 << 20, 5},         // 1 MiB events: the 4 that fit and the one the reader stops at
		{100, 4 << 20, 8 << 20, 1},         // larger than the budget: one at a time
		{100, 4 << 20, 4 << 20 / 100, 100}, // exactly the batch fits
	} {
		if got := readLimit(c.batch, c.budget, c.avg); got != c.want {
			t.Errorf("readLimit(%d, %d, %d) = %d, want %d", c.batch, c.budget, c.avg, got, c.want)
		}
	}
}
