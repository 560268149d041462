package ratelimit

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// The bucket lets Burst through at once, then Rate a second, and says when
// to come back; time is synctest's fake clock, so the test waits for
// nothing real.
func TestBurstThenRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Rule{Burst: 10, Rate: 2}, 100, nil)
		for i := range 10 {
			if ok, _ := l.Allow("a"); !ok {
				t.Fatalf("request %d of the burst refused", i+1)
			}
		}
		ok, retry := l.Allow("a")
		if ok {
			t.Fatal("request past the burst allowed")
		}
		if retry != 500*time.Millisecond {
			t.Fatalf("retry after %v, want 500ms at 2/s", retry)
		}
		if got := RetryAfterSeconds(retry); got != 1 {
			t.Fatalf("Retry-After %d, want 1", got)
		}
		// Another key has its own bucket.
		if ok, _ := l.Allow("b"); !ok {
			t.Fatal("another key was limited")
		}
		time.Sleep(retry)
		if ok, _ := l.Allow("a"); !ok {
			t.Fatal("refused once the retry time passed")
		}
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("two tokens came back in 500ms at 2/s")
		}
		// Over 10 s at the rate: 20 of 40 attempts pass.
		passed := 0
		for range 40 {
			time.Sleep(250 * time.Millisecond)
			if ok, _ := l.Allow("a"); ok {
				passed++
			}
		}
		if passed != 20 {
			t.Fatalf("%d of 40 passed at 4 attempts/s against 2/s", passed)
		}
		// The bucket never holds more than Burst.
		time.Sleep(time.Hour)
		passed = 0
		for range 30 {
			if ok, _ := l.Allow("a"); ok {
				passed++
			}
		}
		if passed != 10 {
			t.Fatalf("after an hour idle %d passed at once, want the burst of 10", passed)
		}
	})
}

// Memory is bounded: idle buckets (full again) are forgotten as other keys
// come, and never more than maxKeys are held. The clock is a fake one.
func TestBoundedMemory(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(Rule{Burst: 4, Rate: 1}, 1000, func() time.Time { return now })
	for i := range 500 {
		l.Allow(fmt.Sprint("k", i))
	}
	if l.Len() != 500 {
		t.Fatalf("%d buckets, want 500", l.Len())
	}
	// 4 s later every bucket is full again: new keys push the idle out.
	now = now.Add(5 * time.Second)
	for i := range 300 {
		l.Allow(fmt.Sprint("new", i))
	}
	if l.Len() != 300 {
		t.Fatalf("%d buckets after the old ones went idle, want only the 300 live ones", l.Len())
	}
	// A flood of distinct keys within the refill time stops at maxKeys.
	for i := range 5000 {
		l.Allow(fmt.Sprint("flood", i))
	}
	if l.Len() != 1000 {
		t.Fatalf("%d buckets, want the cap of 1000", l.Len())
	}
}

// Notes live with the bucket and go with it.
func TestNotes(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(Rule{Burst: 1, Rate: 1}, 2, func() time.Time { return now })
	if l.Note("a") != "" {
		t.Fatal("note of an unknown key")
	}
	l.SetNote("a", "busy")
	if l.Note("a") != "busy" {
		t.Fatal("note lost")
	}
	l.Allow("b")
	l.Allow("c") // over maxKeys 2: "a", the least recently used, goes
	if l.Note("a") != "" {
		t.Fatal("note outlived its bucket")
	}
}
