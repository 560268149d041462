package store

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// coalescer sends concurrent calls to one Redis together: every call made
// while a round trip is in flight waits for it and then goes out with the
// others in the next pipelined round trip (natural batching). An idle
// coalescer sends a call at once, so it adds no latency of its own; under
// load it turns N round trips (N writes and reads on both sides) into one.
// BENCHMARKS.md ("Redis cost pass 2") has what it saves for HTTP heartbeats.
//
// It knows nothing about the calls: Do takes a function that queues one
// call's command(s) on the batch's pipeline and one that reads the result
// once the pipeline has run, so any Redis-backed store can use it. DoMerged
// is for calls that one command can carry together (a script that loops
// over items): the calls of one coalesceGroup that share a round trip are
// queued as one command, which pays the command's fixed cost once.
type coalescer struct {
	pipeline func() redis.Pipeliner
	// inflight bounds the round trips in flight at once; maxBatch the calls
	// one round trip carries (a longer queue goes out in several).
	inflight, maxBatch int

	mu      sync.Mutex
	queue   []*coalescedCall
	running int // round trips in flight (senders running)
}

type coalescedCall struct {
	queue func(redis.Pipeliner)
	read  func() error
	group *coalesceGroup // DoMerged: queue and read are the group's
	item  any
	done  chan error // buffered: the sender never blocks on a caller gone
	sent  bool       // taken into a round trip (guarded by coalescer.mu)
	gone  bool       // its caller's ctx ended before it was taken
}

// A coalesceGroup merges calls: queue gets the items of the group's calls
// in one round trip, in call order, queues one or more commands for all of
// them on the pipeline, and returns the function that, once the pipeline
// ran, reads each item's outcome (one error per item, in order).
type coalesceGroup struct {
	queue func(p redis.Pipeliner, items []any) (read func() []error)
}

// errNoOutcome is a merged call's outcome when its group's read returned
// fewer outcomes than items (a bug in the group, not a Redis failure).
var errNoOutcome = errors.New("redis: coalesced call without an outcome")

func newCoalescer(pipeline func() redis.Pipeliner, inflight, maxBatch int) *coalescer {
	return &coalescer{pipeline: pipeline, inflight: max(inflight, 1), maxBatch: max(maxBatch, 1)}
}

// Do sends one call in the next round trip and returns what read returns.
// queue and read run on the sender's goroutine, read after the pipeline
// ran, before Do returns. A ctx that ends while the call is still queued
// returns ctx.Err() and the call is never sent; one that ends after it was
// sent returns ctx.Err() at once (the call may or may not have been applied,
// as with any Redis command whose caller gives up).
func (c *coalescer) Do(ctx context.Context, queue func(redis.Pipeliner), read func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.do(ctx, &coalescedCall{queue: queue, read: read, done: make(chan error, 1)})
}

// DoMerged sends item in the next round trip together with the other items
// of group g queued meanwhile, and returns item's outcome. ctx is handled as
// by Do.
func (c *coalescer) DoMerged(ctx context.Context, g *coalesceGroup, item any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.do(ctx, &coalescedCall{group: g, item: item, done: make(chan error, 1)})
}

func (c *coalescer) do(ctx context.Context, call *coalescedCall) error {
	c.mu.Lock()
	c.queue = append(c.queue, call)
	if c.running < c.inflight {
		c.running++
		go c.send()
	}
	c.mu.Unlock()
	select {
	case err := <-call.done:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		if !call.sent {
			call.gone = true
		}
		c.mu.Unlock()
		return ctx.Err()
	}
}

// send runs round trips until the queue is empty.
func (c *coalescer) send() {
	batch := make([]*coalescedCall, 0, c.maxBatch)
	for {
		batch = batch[:0]
		c.mu.Lock()
		n := 0
		for _, call := range c.queue {
			if len(batch) == c.maxBatch {
				break
			}
			n++
			if !call.gone {
				call.sent = true
				batch = append(batch, call)
			}
		}
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil // let the backing array go
		}
		if len(batch) == 0 {
			c.running--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		pipe := c.pipeline()
		var groups []*coalesceGroup // in order of their first call
		members := map[*coalesceGroup][]*coalescedCall{}
		for _, call := range batch {
			if call.group == nil {
				call.queue(pipe)
				continue
			}
			if _, ok := members[call.group]; !ok {
				groups = append(groups, call.group)
			}
			members[call.group] = append(members[call.group], call)
		}
		reads := make([]func() []error, len(groups))
		for i, g := range groups {
			items := make([]any, len(members[g]))
			for j, call := range members[g] {
				items[j] = call.item
			}
			reads[i] = g.queue(pipe, items)
		}
		// Its callers' contexts cannot stop a round trip shared with
		// others: the client's read and write timeouts bound it.
		_, _ = pipe.Exec(context.Background()) // errors are per command: read reads them
		for _, call := range batch {
			if call.group == nil {
				call.done <- call.read()
			}
		}
		for i, g := range groups {
			errs := reads[i]()
			for j, call := range members[g] {
				err := errNoOutcome
				if j < len(errs) {
					err = errs[j]
				}
				call.done <- err
			}
		}
	}
}
