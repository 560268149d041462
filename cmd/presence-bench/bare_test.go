package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The bare baseline must speak the protocol the scenarios read, through the
// load tool's own client (openSSE + the spec parser): otherwise a baseline
// figure would measure a different exchange.
func TestBareServerSpeaksTheScenarioProtocol(t *testing.T) {
	const secret = "bench-secret-0123456789abcdef"
	srv := httptest.NewServer(newBare([]byte(secret), time.Hour).handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A forged token is refused before anything is subscribed.
	if _, err := openSSE(ctx, addr, nil, "/sse/room/r1?format=json", mintToken("wrong-secret-0123456789abcdefgh", "u", "U", time.Hour), nil, nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("forged token: want a 401, got %v", err)
	}

	sub := mintToken(secret, "sub1", "Sub", time.Hour)
	js, err := openSSE(ctx, addr, nil, "/sse/room/r1?format=json", sub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer js.close()
	html, err := openSSE(ctx, addr, nil, "/sse?room=r1&watch=1", sub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer html.close()
	if ev, err := js.next(10 * time.Second); err != nil || ev.name != "sync" {
		t.Fatalf("json stream: first event %q, %v; want sync", ev.name, err)
	}
	if ev, err := html.next(10 * time.Second); err != nil || ev.name != "members" {
		t.Fatalf("html stream: first event %q, %v; want members", ev.name, err)
	} else if n, ok := stackCount(ev.data); !ok || n != 0 {
		t.Fatalf("html stream: first count %d (%v), want 0", n, ok)
	}

	hc := newHTTPConn(addr, nil, nil, nil)
	defer hc.close()
	joiner := mintToken(secret, "bj-7", "Joiner", time.Hour)
	code, body, err := hc.do(buildRequest("POST", "127.0.0.1", "/api/presence/room/r1", joiner, []byte(`{"action":"join","sessionId":"s1234567"}`)), 10*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("join: %d %s %v", code, body, err)
	}
	ev, err := js.next(10 * time.Second)
	if err != nil || ev.name != "join" {
		t.Fatalf("json stream after the join: %q, %v", ev.name, err)
	}
	var j struct {
		User struct{ ID string } `json:"user"`
		To   string
		At   int64
	}
	if err := json.Unmarshal(ev.data, &j); err != nil || j.User.ID != "bj-7" || j.To != "online" || j.At == 0 {
		t.Fatalf("join event %s: %+v %v", ev.data, j, err)
	}
	ev, err = html.next(10 * time.Second)
	if n, ok := stackCount(ev.data); err != nil || ev.name != "members" || !ok || n != 1 {
		t.Fatalf("html stream after the join: %q %s (count %d) %v", ev.name, ev.data, n, err)
	}

	// A status change reaches the rooms the user joined.
	code, body, err = hc.do(buildRequest("POST", "127.0.0.1", "/api/presence", joiner, []byte(`{"status":"busy","sessionId":"s1234567"}`)), 10*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("status: %d %s %v", code, body, err)
	}
	if ev, err := js.next(10 * time.Second); err != nil || ev.name != "status" || !strings.Contains(string(ev.data), `"to":"busy"`) {
		t.Fatalf("json stream after the status: %q %s %v", ev.name, ev.data, err)
	}
	if ev, err := html.next(10 * time.Second); err != nil || ev.name != "presence-bj-7" || !strings.Contains(string(ev.data), `data-status="busy"`) {
		t.Fatalf("html stream after the status: %q %s %v", ev.name, ev.data, err)
	}

	m := scrapeMetrics(srv.URL)
	if n, ok := openStreams(m); !ok || n != 2 {
		t.Fatalf("open streams in /metrics: %v %v, want 2", n, ok)
	}
}

func TestStackCount(t *testing.T) {
	for in, want := range map[string]int{
		`<div class="pr-members" data-presence-room="r" data-count="12">`: 12,
		`<div data-count="0"></div>`:                                      0,
	} {
		if n, ok := stackCount([]byte(in)); !ok || n != want {
			t.Errorf("stackCount(%q) = %d, %v; want %d", in, n, ok, want)
		}
	}
	for _, in := range []string{`<div>`, `data-count="x"`, `data-count="12`} {
		if _, ok := stackCount([]byte(in)); ok {
			t.Errorf("stackCount(%q): want not ok", in)
		}
	}
}

func TestJoinerIndex(t *testing.T) {
	ev := []byte(`{"room":"r","user":{"id":"bjR-17","name":"Joiner 17"},"to":"online","at":1}`)
	if got, ok := joinerIndex(ev, "bjR-"); !ok || got != "17" {
		t.Fatalf("joinerIndex = %q, %v; want 17", got, ok)
	}
	if _, ok := joinerIndex([]byte(`{"user":{"id":"bsub-1"}}`), "bjR-"); ok {
		t.Fatal("a subscriber's own join must not count as a joiner's")
	}
}
