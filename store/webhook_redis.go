package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Deliveries implements DeliverySource with a consumer group on the event
// log (the stream every transition is appended to by the script that made
// it, so each transition is in it exactly once).
//
// One node at a time is the active consumer, holding a lease (a key with a
// TTL of Visibility, renewed on every Claim): a single reader keeps the
// receivers' order and lets flap suppression see both halves of a flap. A
// node that dies stops renewing; after Visibility another node takes the
// lease and, with XAUTOCLAIM, the dead node's unacknowledged entries.
func (s *RedisStore) Deliveries(opts DeliveryOptions) (Deliveries, error) {
	opts = opts.withDefaults()
	d := &redisDeliveries{
		client: s.client, log: s.log, opts: opts,
		consumer: randomToken(),
		stream:   s.key("log"),
		lease:    s.key("lease:" + opts.Group),
		cursor:   "0-0",
	}
	// The group exists from now on, so transitions from here on are
	// delivered even before the first Claim.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.ensureGroup(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

type redisDeliveries struct {
	client   redis.UniversalClient
	log      *slog.Logger
	opts     DeliveryOptions
	consumer string
	stream   string
	lease    string

	mu      sync.Mutex // one Claim at a time
	cursor  string     // XAUTOCLAIM position
	grouped bool
}

// leaseScript renews the lease if we hold it, or takes it if it is free.
var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func (d *redisDeliveries) ensureGroup(ctx context.Context) error {
	if d.grouped {
		return nil
	}
	// "$": transitions from before the first webhook consumer are history.
	err := d.client.XGroupCreateMkStream(ctx, d.stream, d.opts.Group, "$").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("redis webhook group: %w", err)
	}
	d.grouped = true
	return nil
}

func (d *redisDeliveries) Claim(ctx context.Context, n int) ([]Delivery, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if held, err := d.takeLease(ctx); !held || err != nil {
		return nil, err
	}
	return d.claim(ctx, n, min(d.opts.Visibility/3, time.Second))
}

// takeLease renews or takes the consumer lease; without it, it waits well
// within the holder's lease and reports false.
func (d *redisDeliveries) takeLease(ctx context.Context) (bool, error) {
	vis := d.opts.Visibility
	held, err := leaseScript.Run(ctx, d.client, []string{d.lease}, d.consumer, vis.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("redis webhook lease: %w", err)
	}
	if held == 0 {
		// Another node is the consumer: look again well within its lease.
		t := time.NewTimer(min(vis/4, time.Second))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-t.C:
			return false, nil
		}
	}
	return true, nil
}

// claim returns up to n deliveries of the stream: first those left pending
// for Visibility, else new ones, waiting up to block for them (block < 0:
// not at all).
func (d *redisDeliveries) claim(ctx context.Context, n int, block time.Duration) ([]Delivery, error) {
	vis := d.opts.Visibility
	if err := d.ensureGroup(ctx); err != nil {
		return nil, err
	}
	// Entries a stopped consumer (or this one) left pending for Visibility.
	msgs, start, err := d.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: d.stream, Group: d.opts.Group, Consumer: d.consumer,
		MinIdle: vis, Start: d.cursor, Count: int64(n),
	}).Result()
	if err != nil {
		if d.noGroup(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("redis webhook autoclaim: %w", err)
	}
	d.cursor = start
	if len(msgs) > 0 {
		return d.decode(ctx, msgs), nil
	}
	res, err := d.client.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: d.opts.Group, Consumer: d.consumer,
		Streams: []string{d.stream, ">"}, Count: int64(n), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if d.noGroup(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("redis webhook read: %w", err)
	}
	var out []Delivery
	for _, st := range res {
		out = append(out, d.decode(ctx, st.Messages)...)
	}
	return out, nil
}

// noGroup: Redis lost its data set (restart without persistence, FLUSHALL):
// the group is created again from now on.
func (d *redisDeliveries) noGroup(err error) bool {
	if strings.HasPrefix(err.Error(), "NOGROUP") {
		d.grouped = false
		d.cursor = "0-0"
		d.log.Warn("presence: webhook consumer group lost (Redis state loss?); creating it again: transitions in between are not delivered")
		return true
	}
	return false
}

// decode turns log entries into deliveries; entries that are not
// transitions (subscription barriers, undecodable ones) are acknowledged
// here.
func (d *redisDeliveries) decode(ctx context.Context, msgs []redis.XMessage) []Delivery {
	out := make([]Delivery, 0, len(msgs))
	var skip []string
	for _, m := range msgs {
		p, _ := m.Values["e"].(string)
		var w wireEvent
		if p == "" || jsonUnmarshal(p, &w) != nil || w.K == "barrier" {
			skip = append(skip, m.ID)
			continue
		}
		e, err := w.event()
		if err != nil {
			skip = append(skip, m.ID)
			continue
		}
		out = append(out, Delivery{ID: m.ID, Event: e})
	}
	if len(skip) > 0 {
		_ = d.Ack(ctx, skip...)
	}
	return out
}

func (d *redisDeliveries) Ack(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := d.client.XAck(ctx, d.stream, d.opts.Group, ids...).Err(); err != nil {
		return fmt.Errorf("redis webhook ack: %w", err)
	}
	return nil
}

func (d *redisDeliveries) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return releaseScript.Run(ctx, d.client, []string{d.lease}, d.consumer).Err()
}
