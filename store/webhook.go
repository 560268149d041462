package store

import (
	"context"
	"encoding/json"
	"time"
)

// Delivery is one transition of the change feed handed out for an
// at-least-once consumer (the webhook dispatcher): ID is stable for that
// transition on every node (the Redis log entry's id), so it is also the
// receiver's idempotency key.
type Delivery struct {
	ID    string
	Event Event
}

// Deliveries hands every transition to exactly one consumer across all
// gateway nodes, until that consumer acknowledges it. A consumer that dies
// without acknowledging has its deliveries handed to another after
// DeliveryOptions.Visibility.
type Deliveries interface {
	// Claim waits (about a second at most) for transitions and returns up to
	// n of them in log order. It may return nothing (another node is the
	// active consumer, or nothing happened). A delivery already returned and
	// not yet acknowledged may be returned again once it has been pending for
	// Visibility: the consumer skips those it still holds.
	Claim(ctx context.Context, n int) ([]Delivery, error)
	// Ack marks deliveries done: they are never handed out again.
	Ack(ctx context.Context, ids ...string) error
	// Close gives up the consumer role (on Redis: frees the lease so another
	// node takes over at once; unacknowledged deliveries still wait for
	// Visibility).
	Close() error
}

// DeliveryOptions configures Deliveries.
type DeliveryOptions struct {
	// Group names the consumer group (one per kind of consumer).
	Group string
	// Visibility is how long an unacknowledged delivery, and the active
	// consumer's lease, survive a consumer that stopped. Default 30 s.
	Visibility time.Duration
}

func (o DeliveryOptions) withDefaults() DeliveryOptions {
	if o.Group == "" {
		o.Group = "webhooks"
	}
	if o.Visibility <= 0 {
		o.Visibility = 30 * time.Second
	}
	return o
}

// DeliverySource is a store that can hand out Deliveries (both backends).
type DeliverySource interface {
	Deliveries(opts DeliveryOptions) (Deliveries, error)
}

var (
	_ DeliverySource = (*MemoryStore)(nil)
	_ DeliverySource = (*RedisStore)(nil)
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
