package handlers

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/webhook"
	"github.com/presenced/presenced/store"
)

// A gateway with --webhook-url posts signed batches that match
// docs/schema/webhook.json, and exports the webhook metrics.
func TestGatewayWebhooks(t *testing.T) {
	secret := []byte("whsec-0123456789abcdef")
	sch, err := jsonschema.NewCompiler().Compile("../docs/schema/webhook.json")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var types []string
	var problems []string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !webhook.Verify(secret, body, r.Header.Get(webhook.SignatureHeader), time.Minute, time.Now()) {
			problems = append(problems, "bad signature")
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err == nil {
			err = sch.Validate(doc)
		}
		if err != nil {
			problems = append(problems, err.Error())
		}
		for _, e := range doc.(map[string]any)["events"].([]any) {
			types = append(types, e.(map[string]any)["type"].(string))
		}
	}))
	defer rcv.Close()
	st := store.NewMemory(storeOptions())
	defer st.Close()
	n := startNode(t, st, func(c *config.Config) {
		c.WebhookURLs, c.WebhookSecret = []string{rcv.URL + "/hooks"}, secret
	})
	c := newClient(t)
	alice := n.token("alice", "Alice")
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{"sessionId":"alice-tab-1"}`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/doc:1", alice, `{"action":"join","sessionId":"alice-tab-1"}`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{"status":"away","sessionId":"alice-tab-1"}`))
	want := []string{"user.online", "room.join", "room.occupied", "user.status"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(types)
		mu.Unlock()
		if got >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	if len(types) != len(want) || types[0] != want[0] || types[1] != want[1] || types[2] != want[2] || types[3] != want[3] {
		t.Errorf("webhook events %q, want %q", types, want)
	}
	for _, p := range problems {
		t.Error(p)
	}
	mu.Unlock()
	label := rcv.Listener.Addr().String() + "/hooks"
	if got := n.metric("presenced_webhook_delivered_total", `receiver="`+label+`"`); got != 4 {
		t.Errorf("presenced_webhook_delivered_total = %v, want 4", got)
	}
	if got := n.metric("presenced_webhook_dropped_total", `receiver="`+label+`"`); got != 0 {
		t.Errorf("dropped = %v", got)
	}
}
