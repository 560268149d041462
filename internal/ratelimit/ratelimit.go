// Package ratelimit is a keyed token-bucket limiter with bounded memory:
// one bucket per key (a user's session, say), refilled continuously, and
// forgotten once it has been idle long enough to be full again (a full
// bucket and no bucket are the same thing). The clock is injectable.
package ratelimit

import (
	"container/list"
	"math"
	"sync"
	"time"
)

// Rule is a bucket's shape: Burst requests at once, then Rate a second.
type Rule struct {
	Burst int
	Rate  float64
}

// refillTime is how long an empty bucket takes to be full again.
func (r Rule) refillTime() time.Duration {
	return time.Duration(float64(r.Burst) / r.Rate * float64(time.Second))
}

// Limiter holds the buckets of one rule.
type Limiter struct {
	rule    Rule
	maxKeys int
	now     func() time.Time

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // front = most recently used; values are *bucket
}

type bucket struct {
	key    string
	tokens float64
	at     time.Time // when tokens was last brought up to date
	note   string
}

// New returns a limiter for rule that keeps at most maxKeys buckets, on
// the clock now (nil: time.Now).
func New(rule Rule, maxKeys int, now func() time.Time) *Limiter {
	if rule.Burst < 1 {
		rule.Burst = 1
	}
	if rule.Rate <= 0 {
		rule.Rate = 1
	}
	if maxKeys < 1 {
		maxKeys = 1
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{rule: rule, maxKeys: maxKeys, now: now, m: make(map[string]*list.Element)}
}

// Rule is the limiter's rule.
func (l *Limiter) Rule() Rule { return l.rule }

// Allow takes a token from key's bucket. When the bucket is empty it takes
// nothing and says how long until a token is back.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := (1 - b.tokens) / l.rule.Rate
	return false, time.Duration(math.Ceil(wait * float64(time.Second)))
}

// Note is the small value kept with key's bucket (SetNote), "" when there
// is none or the bucket was forgotten.
func (l *Limiter) Note(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.m[key]; ok {
		return el.Value.(*bucket).note
	}
	return ""
}

// SetNote keeps v with key's bucket until the bucket is forgotten.
func (l *Limiter) SetNote(key, v string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucketLocked(key, now).note = v
}

// Len is the number of buckets held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// bucketLocked returns key's bucket brought up to now, creating it full,
// and forgets idle buckets: up to two of the least recently used ones that
// are full again (so that the number held follows the keys in use), and
// the least recently used one whatever its state past maxKeys.
func (l *Limiter) bucketLocked(key string, now time.Time) *bucket {
	for range 2 {
		back := l.lru.Back()
		if back == nil {
			break
		}
		if b := back.Value.(*bucket); b.key == key || now.Sub(b.at) < l.rule.refillTime() {
			break
		}
		l.removeLocked(back)
	}
	if el, ok := l.m[key]; ok {
		b := el.Value.(*bucket)
		if d := now.Sub(b.at); d > 0 {
			b.tokens = math.Min(float64(l.rule.Burst), b.tokens+d.Seconds()*l.rule.Rate)
			b.at = now
		}
		l.lru.MoveToFront(el)
		return b
	}
	for len(l.m) >= l.maxKeys {
		l.removeLocked(l.lru.Back())
	}
	b := &bucket{key: key, tokens: float64(l.rule.Burst), at: now}
	l.m[key] = l.lru.PushFront(b)
	return b
}

func (l *Limiter) removeLocked(el *list.Element) {
	l.lru.Remove(el)
	delete(l.m, el.Value.(*bucket).key)
}

// RetryAfterSeconds is a Retry-After header value for d: whole seconds,
// rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}
