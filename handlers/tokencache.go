package handlers

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// DefaultTokenCacheBytes bounds the verified-token cache: about 16 MiB of
// identities (some 40,000 typical tokens), whatever their size.
const DefaultTokenCacheBytes = 16 << 20

// tokenCacheOverhead approximates what one entry costs beyond its strings:
// the list element, the map slot, the key and the Identity's headers.
const tokenCacheOverhead = 256

// tokenCache holds identities already verified, keyed by a hash of the
// token. Verify only caches tokens in canonical form (canonicalToken:
// base64url without padding, line breaks or trailing bits, checked by the
// parser's strict decoding), so one signed token has exactly one key: a
// client cannot grow the cache by re-spelling a token it holds. It is
// bounded in bytes, not entries, because a token's size is the holder's
// choice (a long rooms or see list); the least recently used entry goes
// first.
type tokenCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	m     map[[sha256.Size]byte]*list.Element
	lru   list.List // front = most recently used; values are *cacheEntry
}

type cacheEntry struct {
	key  [sha256.Size]byte
	id   Identity
	size int64
}

func newTokenCache(maxBytes int64) *tokenCache {
	return &tokenCache{max: maxBytes, m: make(map[[sha256.Size]byte]*list.Element)}
}

// identitySize is what an entry for id costs, counted in bytes.
func identitySize(id Identity) int64 {
	n := tokenCacheOverhead + len(id.Token) + len(id.User.ID) + len(id.User.Name) + len(id.User.Avatar)
	for _, r := range id.Rooms {
		n += 16 + len(r)
	}
	if id.See != nil {
		for _, u := range id.See.Users {
			n += 16 + len(u)
		}
		for _, r := range id.See.Rooms {
			n += 16 + len(r)
		}
	}
	return int64(n)
}

// get returns the identity cached for raw if it is still accepted at now;
// an expired entry is dropped.
func (c *tokenCache) get(raw string, now time.Time) (Identity, bool) {
	k := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return Identity{}, false
	}
	e := el.Value.(*cacheEntry)
	// The hash is not trusted alone: the very same bytes must have been
	// verified.
	if e.id.Token != raw {
		return Identity{}, false
	}
	if !now.Before(e.id.acceptedUntil()) {
		c.removeLocked(el)
		return Identity{}, false
	}
	c.lru.MoveToFront(el)
	return e.id, true
}

// put caches a verified identity, evicting the least recently used entries
// until the cache fits its byte budget. An identity larger than the whole
// budget is not cached.
func (c *tokenCache) put(id Identity) {
	size := identitySize(id)
	if size > c.max {
		return
	}
	k := sha256.Sum256([]byte(id.Token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		c.removeLocked(el)
	}
	for c.bytes+size > c.max {
		c.removeLocked(c.lru.Back())
	}
	c.m[k] = c.lru.PushFront(&cacheEntry{key: k, id: id, size: size})
	c.bytes += size
}

func (c *tokenCache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.m, e.key)
	c.bytes -= e.size
}

// stats reports the number of entries and their bytes (tests, metrics).
func (c *tokenCache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m), c.bytes
}
