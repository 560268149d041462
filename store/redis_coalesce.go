package store

import (
	"context"
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
// once the pipeline has run, so any Redis-backed store can use it.
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
	done  chan error // buffered: the sender never blocks on a caller gone
	sent  bool       // taken into a round trip (guarded by coalescer.mu)
	gone  bool       // its caller's ctx ended before it was taken
}

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
	call := &coalescedCall{queue: queue, read: read, done: make(chan error, 1)}
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
		for _, call := range batch {
			call.queue(pipe)
		}
		// Its callers' contexts cannot stop a round trip shared with
		// others: the client's read and write timeouts bound it.
		_, _ = pipe.Exec(context.Background()) // errors are per command: read reads them
		for _, call := range batch {
			call.done <- call.read()
		}
	}
}
