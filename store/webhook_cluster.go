package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Deliveries implements DeliverySource on a Redis Cluster: one consumer
// group per partition log, and one lease for the whole cluster, so that one
// node at a time is the active consumer (as on a single Redis: the
// receivers' order and flap suppression need a single reader). A room's
// leave and its rejoin are in one partition, so a flap is still seen
// whole; between partitions there is no order to keep. Delivery ids are
// "partition/entry id".
func (s *ClusterStore) Deliveries(opts DeliveryOptions) (Deliveries, error) {
	opts = opts.withDefaults()
	d := &clusterDeliveries{opts: opts, parts: make([]*redisDeliveries, len(s.parts))}
	consumer := randomToken()
	for i := range s.parts {
		d.parts[i] = &redisDeliveries{
			client: s.client, log: s.log, opts: opts, consumer: consumer,
			stream: s.parts[i].key("log"), lease: s.parts[0].key("lease:" + opts.Group), cursor: "0-0",
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range d.parts {
		if err := p.ensureGroup(ctx); err != nil {
			return nil, err
		}
	}
	return d, nil
}

var _ DeliverySource = (*ClusterStore)(nil)

type clusterDeliveries struct {
	opts  DeliveryOptions
	parts []*redisDeliveries // parts[0] also holds the lease
	mu    sync.Mutex
	next  int // the partition the next Claim starts with (fairness)
}

// clusterPoll is how long a Claim that found nothing in any partition
// waits before it returns (a blocking read spans one stream, one slot).
const clusterPoll = 200 * time.Millisecond

func (d *clusterDeliveries) Claim(ctx context.Context, n int) ([]Delivery, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if held, err := d.parts[0].takeLease(ctx); !held || err != nil {
		return nil, err
	}
	var out []Delivery
	var firstErr error
	for k := range d.parts {
		i := (d.next + k) % len(d.parts)
		got, err := d.parts[i].claim(ctx, n-len(out), -1)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		for _, g := range got {
			g.ID = strconv.Itoa(i) + "/" + g.ID
			out = append(out, g)
		}
		if len(out) >= n {
			d.next = (i + 1) % len(d.parts)
			break
		}
	}
	if len(out) > 0 || firstErr != nil {
		return out, firstErr
	}
	t := time.NewTimer(clusterPoll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, nil
	}
}

func (d *clusterDeliveries) Ack(ctx context.Context, ids ...string) error {
	by := map[int][]string{}
	for _, id := range ids {
		p, entry, ok := strings.Cut(id, "/")
		i, err := strconv.Atoi(p)
		if !ok || err != nil || i < 0 || i >= len(d.parts) {
			return fmt.Errorf("redis cluster webhook ack: bad delivery id %q", id)
		}
		by[i] = append(by[i], entry)
	}
	var errs []error
	for i, entries := range by {
		errs = append(errs, d.parts[i].Ack(ctx, entries...))
	}
	return errors.Join(errs...)
}

func (d *clusterDeliveries) Close() error { return d.parts[0].Close() }
