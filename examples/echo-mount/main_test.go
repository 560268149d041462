package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/eventstream"
	"github.com/presenced/presenced/store"
)

// The example app, served for real: its own page embeds the widget, whose
// URLs all carry the /presence prefix, and the gateway's API, static files
// and streams answer under it.
func TestMountedUnderPrefix(t *testing.T) {
	gw, st, err := newGateway(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newApp(gw))
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	}()

	get := func(path string, hdr ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := get("/presence/healthz"); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
	if code, _ := get("/presence/static/presence.js"); code != http.StatusOK {
		t.Fatalf("presence.js %d", code)
	}
	code, body := get("/?user=alice")
	if code != http.StatusOK {
		t.Fatalf("page %d: %s", code, body)
	}
	for _, want := range []string{`sse-connect="/presence/sse/room/lobby?`, `href="/presence/static/presence.css"`, `src="/presence/static/vendor/htmx.min.js"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("page lacks %s:\n%s", want, body)
		}
	}

	// A stream under the prefix: state first, with its own user.
	tok, _ := gw.MintToken(store.Profile{ID: "bob", Name: "Bob"}, time.Hour, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/presence/sse/room/lobby?sid=bob-tab-1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stream %d", res.StatusCode)
	}
	p := eventstream.NewParser(res.Body)
	for {
		ev, err := p.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "members" {
			if !strings.Contains(ev.Data, `data-presence-user="bob"`) {
				t.Fatalf("members without bob: %s", ev.Data)
			}
			break
		}
	}
}
