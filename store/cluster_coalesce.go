package store

import (
	"context"
	"sync"
	"time"
)

// opQueue sends a node's concurrent Heartbeat and Join calls to the
// cluster together: a call made while a batch is on its way waits for it
// and goes out with the others in the next one, whose round trips (see
// ClusterStore.heartbeats) are shared by all its calls. An idle queue sends
// a call at once: no latency of its own; under load, N heartbeats cost the
// round trips of one.
type opQueue struct {
	mu      sync.Mutex
	queue   []*queuedOp
	running int // batches on their way
}

type queuedOp struct {
	op   *hbOp
	done chan struct{}
	gone bool // its caller gave up before the op was taken (guarded by opQueue.mu)
}

// Bounds of the queue: batches on their way at once, and ops per batch.
const (
	opInflight = 2
	opBatchMax = 128
	// opBatchTimeout bounds one batch's round trips: the batch runs for all
	// its callers, so no single caller's context governs it.
	opBatchTimeout = 10 * time.Second
)

// do runs op in the next batch and returns its outcome, or ctx.Err() if
// ctx ends first (then op is not sent if it was still queued).
func (s *ClusterStore) do(ctx context.Context, op *hbOp) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op.batch = true // its error is its own, even in a batch of one
	q := &s.ops
	w := &queuedOp{op: op, done: make(chan struct{})}
	q.mu.Lock()
	q.queue = append(q.queue, w)
	if q.running < opInflight {
		q.running++
		go s.sendOps()
	}
	q.mu.Unlock()
	select {
	case <-w.done:
		return op.err
	case <-ctx.Done():
		q.mu.Lock()
		w.gone = true
		q.mu.Unlock()
		return ctx.Err()
	}
}

// sendOps sends batches until the queue is empty.
func (s *ClusterStore) sendOps() {
	q := &s.ops
	for {
		q.mu.Lock()
		var batch []*queuedOp
		for len(q.queue) > 0 && len(batch) < opBatchMax {
			w := q.queue[0]
			q.queue = q.queue[1:]
			if !w.gone {
				batch = append(batch, w)
			}
		}
		if len(batch) == 0 {
			q.running--
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		ops := make([]*hbOp, len(batch))
		for i, w := range batch {
			ops[i] = w.op
		}
		ctx, cancel := context.WithTimeout(context.Background(), opBatchTimeout)
		if err := s.heartbeats(ctx, ops); err != nil {
			for _, op := range ops {
				if op.err == nil {
					op.err = err
				}
			}
		}
		cancel()
		for _, w := range batch {
			close(w.done)
		}
	}
}
