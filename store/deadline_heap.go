package store

import (
	"container/heap"
	"time"
)

// deadlineKind says what a deadline expires.
type deadlineKind uint8

const (
	deadlineSession   deadlineKind = iota + 1 // a session's TTL
	deadlineTyping                            // a typing mark's TypingTTL
	deadlineRetention                         // an offline user's LastSeenRetention
	deadlineMember                            // a stream-held membership's Hold
	deadlineEnded                             // an EndSession tombstone's EndedRetention
)

// deadline is one entry of the MemoryStore's expiry queue. It is embedded in
// the record it expires (session, typing mark, user), so scheduling and
// refreshing never allocate: a refresh changes at and calls heap.Fix.
type deadline struct {
	at    time.Time
	index int // position in the heap; -1 while not queued
	kind  deadlineKind

	session *memSession // deadlineSession
	typist  *memTypist  // deadlineTyping
	user    *memUser    // deadlineRetention
	hold    *memHold    // deadlineMember
	ended   *memEnded   // deadlineEnded
}

func (d *deadline) queued() bool { return d.index >= 0 }

// deadlineHeap is a min-heap of deadlines by time (container/heap).
type deadlineHeap []*deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }

func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *deadlineHeap) Push(x any) {
	d := x.(*deadline)
	d.index = len(*h)
	*h = append(*h, d)
}

func (h *deadlineHeap) Pop() any {
	old := *h
	n := len(old) - 1
	d := old[n]
	old[n] = nil
	d.index = -1
	*h = old[:n]
	return d
}

// schedule queues d for at, or moves it there if it is already queued.
func (h *deadlineHeap) schedule(d *deadline, at time.Time) {
	d.at = at
	if d.queued() {
		heap.Fix(h, d.index)
		return
	}
	heap.Push(h, d)
}

// cancel takes d out of the queue if it is queued.
func (h *deadlineHeap) cancel(d *deadline) {
	if d.queued() {
		heap.Remove(h, d.index)
	}
}

// peek returns the earliest deadline, or nil when the queue is empty.
func (h deadlineHeap) peek() *deadline {
	if len(h) == 0 {
		return nil
	}
	return h[0]
}

// popDue removes and returns the earliest deadline if it is due at now.
func (h *deadlineHeap) popDue(now time.Time) *deadline {
	if len(*h) == 0 || (*h)[0].at.After(now) {
		return nil
	}
	return heap.Pop(h).(*deadline)
}
