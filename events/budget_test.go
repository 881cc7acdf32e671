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
