package store

import (
	"context"
	"sync"
)

// Subscription is one reader of a store's change feed.
type Subscription struct {
	c      chan Event
	quit   chan struct{} // closed with c; ends the context watcher
	feed   *feed
	mu     sync.Mutex
	err    error
	closed bool
	// active is false until a backend whose events travel through a server
	// has seen its barrier (see RedisStore.Subscribe); guarded by feed.mu.
	active bool
	// parts has bit p set once the barrier of partition p has passed (a
	// partitioned backend: ClusterStore); when all have, active is set.
	// Guarded by feed.mu.
	parts uint64
}

// C delivers the events. It is closed when the subscription ends; Err then
// says why.
func (s *Subscription) C() <-chan Event { return s.c }

// Err is nil while the subscription is open; after C is closed it is
// ErrSlowSubscriber, ErrClosed or the context's error.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription.
func (s *Subscription) Close() { s.feed.remove(s, context.Canceled) }

// feed fans events out to subscriptions without ever blocking the publisher:
// a subscription whose buffer is full is closed with ErrSlowSubscriber
// (Mercure's rule: a slow reader is disconnected, not waited for).
type feed struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	buffer int
	closed bool
}

func newFeed(buffer int) *feed {
	return &feed{subs: make(map[*Subscription]struct{}), buffer: buffer}
}

func (f *feed) subscribe(ctx context.Context) (*Subscription, error) {
	return f.subscribeActive(ctx, true)
}

func (f *feed) subscribeActive(ctx context.Context, active bool) (*Subscription, error) {
	s := &Subscription{c: make(chan Event, f.buffer), quit: make(chan struct{}), feed: f, active: active}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, ErrClosed
	}
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				f.remove(s, ctx.Err())
			case <-s.quit:
			}
		}()
	}
	return s, nil
}

func (f *feed) remove(s *Subscription, why error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(s, why)
}

func (f *feed) removeLocked(s *Subscription, why error) {
	if _, ok := f.subs[s]; !ok {
		return
	}
	delete(f.subs, s)
	s.mu.Lock()
	s.err = why
	s.closed = true
	s.mu.Unlock()
	close(s.c)
	close(s.quit)
}

// publish delivers events in order to every subscription.
func (f *feed) publish(events ...Event) { f.publishFrom(-1, events...) }

// publishFrom delivers events of partition part (-1: not partitioned) in
// order to every subscription that is active, or for which part's barrier
// has passed.
func (f *feed) publishFrom(part int, events ...Event) {
	if len(events) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		if !s.active && (part < 0 || s.parts&(1<<part) == 0) {
			continue
		}
		for _, e := range events {
			select {
			case s.c <- e:
			default:
				f.removeLocked(s, ErrSlowSubscriber)
			}
			if s.closed {
				break
			}
		}
	}
}

// activate starts delivering events to s (if it is still open).
func (f *feed) activate(s *Subscription) {
	f.mu.Lock()
	s.active = true
	f.mu.Unlock()
}

// activatePart records that partition part's barrier has passed for s: its
// events reach s from now on; once all n partitions' have, s is active.
func (f *feed) activatePart(s *Subscription, part, n int) {
	f.mu.Lock()
	s.parts |= 1 << part
	if s.parts == 1<<n-1 {
		s.active = true
	}
	f.mu.Unlock()
}

func (f *feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for s := range f.subs {
		f.removeLocked(s, ErrClosed)
	}
}
