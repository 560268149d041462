package handlers

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
)

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// respellings returns other spellings of tok that Go's lenient base64
// decoding maps to the same signature bytes: line breaks inserted into the
// signature, and the unused low bits of its last character set.
func respellings(tok string, n int) []string {
	dot := strings.LastIndexByte(tok, '.')
	head, sig := tok[:dot+1], tok[dot+1:]
	var out []string
	last := strings.IndexByte(b64url, sig[len(sig)-1])
	for flip := 1; flip <= 3; flip++ { // 32 bytes in 43 chars: 2 unused bits
		out = append(out, head+sig[:len(sig)-1]+string(b64url[last^flip]))
	}
	breaks := []string{"\n", "\r", "\r\n"}
	for k := 1; len(out) < n; k++ {
		for i := 0; i <= len(sig) && len(out) < n; i++ {
			br := strings.Repeat(breaks[(i+k)%len(breaks)], k)
			out = append(out, head+sig[:i]+br+sig[i:])
		}
	}
	return out
}

// Finding 2: a token re-spelled with %0A / CR in its signature, or with
// the signature's unused trailing bits flipped, is refused (401), and 2,500
// such variants leave the verified-token cache as it was. Before the fix
// every variant was accepted and cached as a new entry (the process grew
// by ~100 MiB over 2,500 requests).
func TestTokenRespellingsRefusedAndNotCached(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	tok := n.token("alice", "Alice")
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice&token="+url.QueryEscape(tok), "", ""))
	entries0, bytes0 := n.srv.auth.cache.stats()
	if entries0 != 1 {
		t.Fatalf("cache holds %d entries after one token, want 1", entries0)
	}
	variants := respellings(tok, 2500)
	if len(variants) != 2500 {
		t.Fatalf("%d variants", len(variants))
	}
	accepted := 0
	for i, v := range variants {
		if v == tok {
			t.Fatalf("variant %d is the token itself", i)
		}
		r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice&token="+url.QueryEscape(v), "", "")
		if r.code != http.StatusUnauthorized {
			accepted++
			if accepted <= 3 {
				t.Errorf("variant %d %q: %d %s, want 401", i, v[strings.LastIndexByte(v, '.'):], r.code, r.body)
			}
		}
	}
	if accepted > 0 {
		t.Errorf("%d of %d re-spelled tokens accepted", accepted, len(variants))
	}
	if entries, bytes := n.srv.auth.cache.stats(); entries != entries0 || bytes != bytes0 {
		t.Fatalf("cache grew from %d entries / %d B to %d / %d B", entries0, bytes0, entries, bytes)
	}
	// The token itself still works, from the cache.
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice", tok, ""))
}

// The cache is bounded in bytes: it never holds more than its budget,
// evicts the least recently used entry first, and drops expired entries.
func TestTokenCacheByteBound(t *testing.T) {
	a := NewAuth(testSecret)
	now := time.Unix(1_700_000_000, 0)
	a.now = func() time.Time { return now }
	const budget = 8 << 10
	a.cache = newTokenCache(budget)
	mint := func(i int, name string) string {
		tok, err := a.Mint(store.Profile{ID: fmt.Sprintf("user%04d", i), Name: name}, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	first := mint(0, "First")
	if _, err := a.Verify(first); err != nil {
		t.Fatal(err)
	}
	var toks []string
	for i := 1; i <= 200; i++ {
		tok := mint(i, strings.Repeat("n", 60))
		toks = append(toks, tok)
		if _, err := a.Verify(tok); err != nil {
			t.Fatal(err)
		}
		// Keep the first token in use: LRU keeps it.
		if _, err := a.Verify(first); err != nil {
			t.Fatal(err)
		}
		if _, b := a.cache.stats(); b > budget {
			t.Fatalf("after %d tokens the cache holds %d B, over its %d B budget", i+1, b, budget)
		}
	}
	entries, b := a.cache.stats()
	if entries < 2 || entries >= 200 {
		t.Fatalf("%d entries (%d B): want the budget to hold some but not all", entries, b)
	}
	if _, ok := a.cache.get(first, now); !ok {
		t.Fatal("the most recently used token was evicted")
	}
	if _, ok := a.cache.get(toks[0], now); ok {
		t.Fatal("the least recently used token is still cached")
	}
	if _, ok := a.cache.get(toks[len(toks)-1], now); !ok {
		t.Fatal("the newest token is not cached")
	}
	// An entry past its token's exp (plus leeway) is dropped, and the
	// token is refused.
	now = now.Add(2 * time.Hour)
	if _, err := a.Verify(first); err == nil {
		t.Fatal("an expired token was accepted from the cache")
	}
	if _, ok := a.cache.get(first, now); ok {
		t.Fatal("the expired entry is still cached")
	}
	// A token bigger than the whole budget is verified but not cached.
	big, err := a.MintSee(store.Profile{ID: "big"}, time.Hour, nil, &See{Users: bigList(400)})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := a.cache.stats()
	if _, err := a.Verify(big); err != nil {
		t.Fatal(err)
	}
	if after, _ := a.cache.stats(); after != before {
		t.Fatalf("a token over the whole budget was cached (%d → %d entries)", before, after)
	}
}

func bigList(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("someone-with-a-long-id-%06d", i)
	}
	return out
}
