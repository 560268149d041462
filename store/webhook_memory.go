package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Deliveries implements DeliverySource: on one process there is one
// consumer, which reads the change feed. Ack is a no-op: a transition
// that was not delivered when the process stops is lost with the process
// (as is all its presence state).
func (s *MemoryStore) Deliveries(opts DeliveryOptions) (Deliveries, error) {
	d := &memDeliveries{st: s, prefix: fmt.Sprintf("m%x", time.Now().UnixNano())}
	// Subscribed now, not at the first Claim: transitions from here on are
	// delivered.
	sub, err := s.Subscribe(context.Background())
	if err != nil {
		return nil, err
	}
	d.sub = sub
	return d, nil
}

type memDeliveries struct {
	st     *MemoryStore
	prefix string // ids stay unique across restarts of the process
	seq    atomic.Uint64
	mu     sync.Mutex
	sub    *Subscription
}

func (d *memDeliveries) Claim(ctx context.Context, n int) ([]Delivery, error) {
	d.mu.Lock()
	if d.sub == nil {
		sub, err := d.st.Subscribe(context.Background())
		if err != nil {
			d.mu.Unlock()
			return nil, err
		}
		d.sub = sub
	}
	sub := d.sub
	d.mu.Unlock()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	var out []Delivery
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, nil
	case e, ok := <-sub.C():
		if !ok {
			return nil, d.lost(sub)
		}
		out = append(out, d.delivery(e))
	}
	for len(out) < n {
		select {
		case e, ok := <-sub.C():
			if !ok {
				return out, nil // the next Claim reports it
			}
			out = append(out, d.delivery(e))
		default:
			return out, nil
		}
	}
	return out, nil
}

// lost resubscribes after the feed closed the subscription.
func (d *memDeliveries) lost(sub *Subscription) error {
	d.mu.Lock()
	if d.sub == sub {
		d.sub = nil
	}
	d.mu.Unlock()
	err := sub.Err()
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("change feed lost (%v): transitions may have been missed", err)
}

func (d *memDeliveries) delivery(e Event) Delivery {
	return Delivery{ID: fmt.Sprintf("%s-%d", d.prefix, d.seq.Add(1)), Event: e}
}

func (d *memDeliveries) Ack(context.Context, ...string) error { return nil }

func (d *memDeliveries) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sub != nil {
		d.sub.Close()
		d.sub = nil
	}
	return nil
}
