package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/presenced/presenced/internal/eventstream"
	"github.com/presenced/presenced/store"
)

// The schema tests validate real answers and real stream events of a
// running gateway against docs/openapi.yaml and docs/schema/*.json with
// santhosh-tekuri/jsonschema (a maintained JSON Schema 2020-12 validator,
// OpenAPI 3.1's dialect). For an API answer the schema is the one the
// OpenAPI document gives for that path, method and status code; for an
// event, the file named after the event.

type schemas struct {
	c       *jsonschema.Compiler
	docsURL string // file:///…/docs/
	api     map[string]any

	mu    sync.Mutex
	cache map[string]*jsonschema.Schema
	// seen records what was validated, so that the tests can check they
	// covered every documented event and answer.
	seen map[string]bool
}

var (
	schemaOnce sync.Once
	schemaSet  *schemas
	schemaErr  error
)

func loadSchemas(t *testing.T) *schemas {
	t.Helper()
	schemaOnce.Do(func() { schemaSet, schemaErr = newSchemas() })
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schemaSet
}

func newSchemas() (*schemas, error) {
	dir, err := filepath.Abs("../docs")
	if err != nil {
		return nil, err
	}
	docsURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir) + "/"}).String()
	raw, err := os.ReadFile(filepath.Join(dir, "openapi.yaml"))
	if err != nil {
		return nil, err
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	// Through JSON, so that numbers and maps are what the validator expects.
	j, err := json.Marshal(y)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml as JSON: %w", err)
	}
	api, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(docsURL+"openapi.yaml", api); err != nil {
		return nil, err
	}
	// docs/schema/*.json load from disk through the validator's file loader.
	return &schemas{c: c, docsURL: docsURL, api: api.(map[string]any), cache: map[string]*jsonschema.Schema{}, seen: map[string]bool{}}, nil
}

func (s *schemas) compile(loc string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch := s.cache[loc]; sch != nil {
		return sch, nil
	}
	sch, err := s.c.Compile(loc)
	if err != nil {
		return nil, err
	}
	s.cache[loc] = sch
	return sch, nil
}

func (s *schemas) mark(what string) {
	s.mu.Lock()
	s.seen[what] = true
	s.mu.Unlock()
}

// pointer escapes one JSON pointer token.
func pointer(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// responseSchema is the location of the schema the OpenAPI document gives
// for an answer: paths[path][method].responses[code], following a $ref to
// components/responses, then content["application/json"].schema.
func (s *schemas) responseSchema(path, method string, code int) (string, error) {
	paths, _ := s.api["paths"].(map[string]any)
	item, ok := paths[path].(map[string]any)
	if !ok {
		return "", fmt.Errorf("openapi.yaml has no path %s", path)
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		return "", fmt.Errorf("openapi.yaml has no %s %s", method, path)
	}
	resps, _ := op["responses"].(map[string]any)
	key := fmt.Sprint(code)
	resp, ok := resps[key].(map[string]any)
	if !ok {
		return "", fmt.Errorf("openapi.yaml: %s %s does not document a %d", method, path, code)
	}
	loc := "/paths/" + pointer(path) + "/" + strings.ToLower(method) + "/responses/" + key
	if ref, ok := resp["$ref"].(string); ok {
		name, found := strings.CutPrefix(ref, "#/components/responses/")
		comps, _ := s.api["components"].(map[string]any)
		rs, _ := comps["responses"].(map[string]any)
		if resp, ok = rs[name].(map[string]any); !found || !ok {
			return "", fmt.Errorf("openapi.yaml: unresolvable response %s", ref)
		}
		loc = "/components/responses/" + pointer(name)
	}
	content, _ := resp["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	if _, ok := media["schema"]; !ok {
		return "", fmt.Errorf("openapi.yaml: %s %s %d has no application/json schema", method, path, code)
	}
	return s.docsURL + "openapi.yaml#" + loc + "/content/application~1json/schema", nil
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	return v
}

// checkAnswer validates a real answer against the OpenAPI document.
func (s *schemas) checkAnswer(t *testing.T, path, method string, code int, body []byte) {
	t.Helper()
	loc, err := s.responseSchema(path, method, code)
	if err != nil {
		t.Fatal(err)
	}
	sch, err := s.compile(loc)
	if err != nil {
		t.Fatalf("compile %s: %v", loc, err)
	}
	if err := sch.Validate(decodeAny(t, body)); err != nil {
		t.Fatalf("%s %s → %d does not match openapi.yaml:\n%s\n%v", method, path, code, body, err)
	}
	s.mark(fmt.Sprintf("%s %s %d", method, path, code))
}

// checkEvent validates a stream event's data against docs/schema/{name}.json
// (and a sync also against the file for its topic), and the event as a
// whole against the OpenAPI StreamEvent.
func (s *schemas) checkEvent(t *testing.T, ev eventstream.Event) {
	t.Helper()
	data := decodeAny(t, []byte(ev.Data))
	files := []string{ev.Type + ".json"}
	if ev.Type == "sync" {
		topic, _ := data.(map[string]any)["topic"].(string)
		switch {
		case topic == "users":
			files = append(files, "sync-users.json")
		case strings.HasPrefix(topic, "room:"):
			files = append(files, "sync-room.json")
		default:
			t.Fatalf("sync without a known topic: %s", ev.Data)
		}
		s.mark("sync " + files[1])
	}
	for _, f := range files {
		sch, err := s.compile(s.docsURL + "schema/" + f)
		if err != nil {
			t.Fatalf("compile %s: %v", f, err)
		}
		if err := sch.Validate(data); err != nil {
			t.Fatalf("event %s does not match %s:\n%s\n%v", ev.Type, f, ev.Data, err)
		}
	}
	whole, err := s.compile(s.docsURL + "openapi.yaml#/components/schemas/StreamEvent")
	if err != nil {
		t.Fatal(err)
	}
	if err := whole.Validate(map[string]any{"event": ev.Type, "id": ev.ID, "data": data}); err != nil {
		t.Fatalf("event %s does not match StreamEvent: %v", ev.Type, err)
	}
	s.mark("event " + ev.Type)
}

// ------------------------------------------------------------------ tests

// TestSchemasCompile: every schema file and every schema of the OpenAPI
// document compiles (all $refs resolve), and the schemas are not vacuous:
// documents of the wrong shape are refused.
func TestSchemasCompile(t *testing.T) {
	s := loadSchemas(t)
	if v, _ := s.api["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi: %q, want 3.1.x", v)
	}
	files, _ := filepath.Glob("../docs/schema/*.json")
	if len(files) < 8 {
		t.Fatalf("schema files: %v", files)
	}
	for _, f := range files {
		if _, err := s.compile(s.docsURL + "schema/" + filepath.Base(f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	comps := s.api["components"].(map[string]any)
	for name := range comps["schemas"].(map[string]any) {
		if _, err := s.compile(s.docsURL + "openapi.yaml#/components/schemas/" + name); err != nil {
			t.Errorf("components/schemas/%s: %v", name, err)
		}
	}
	for path, item := range s.api["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			opm, ok := op.(map[string]any)
			if !ok || method == "parameters" {
				continue
			}
			for code := range opm["responses"].(map[string]any) {
				var n int
				fmt.Sscan(code, &n)
				loc, err := s.responseSchema(path, method, n)
				if err != nil {
					if strings.HasPrefix(path, "/sse") && code == "200" {
						continue // text/event-stream: the events have their own schemas
					}
					t.Errorf("%s %s %s: %v", method, path, code, err)
					continue
				}
				if _, err := s.compile(loc); err != nil {
					t.Errorf("%s %s %s: %v", method, path, code, err)
				}
			}
		}
	}

	refuse := map[string]string{
		"sync-users.json": `{"topic":"room:a","room":"a","member":false,"members":[],"count":0,"typingUsers":[]}`,
		"sync-room.json":  `{"topic":"users","presence":{}}`,
		"join.json":       `{"room":"a","user":{"id":"u","name":"U","avatar":""},"status":"online"}`,
		"leave.json":      `{"room":"a","user":{"id":"u","name":"U","avatar":""},"at":1,"extra":true}`,
		"status.json":     `{"user":{"id":"u","name":"U","avatar":""},"from":"offline","to":"idle","at":1}`,
		"typing.json":     `{"room":"bad room","typingUsers":[]}`,
		"sync.json":       `{"topic":"users"}`,
	}
	for f, doc := range refuse {
		sch, err := s.compile(s.docsURL + "schema/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(decodeAny(t, []byte(doc))); err == nil {
			t.Errorf("%s accepted %s", f, doc)
		}
	}
}

// TestSchemaAPIAnswers sends real requests, good and bad, and validates
// every answer against the schema openapi.yaml documents for it.
func TestSchemaAPIAnswers(t *testing.T) {
	s := loadSchemas(t)
	g := startGateway(t, newStore(t, "memory"))
	hc := &http.Client{Timeout: 30 * time.Second}
	alice := g.token(t, "alice", "Alice")
	onlyLobby, err := g.srv.Auth().Mint(store.Profile{ID: "carol", Name: "Carol"}, time.Hour, []string{"lobby"})
	if err != nil {
		t.Fatal(err)
	}

	call := func(method, path, query, token, ctype, body string, want int) []byte {
		t.Helper()
		u := g.base + path
		if query != "" {
			u += "?" + query
		}
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("%s %s?%s: %d %s, want %d", method, path, query, res.StatusCode, b, want)
		}
		return b
	}
	// check calls and validates against the documented path (with the
	// template for path parameters).
	check := func(method, docPath, path, query, token, ctype, body string, want int) []byte {
		t.Helper()
		b := call(method, path, query, token, ctype, body, want)
		s.checkAnswer(t, docPath, method, want, b)
		return b
	}
	const J = "application/json"
	room, typing := "/api/presence/room/{roomId}", "/api/presence/room/{roomId}/typing"

	check("GET", "/healthz", "/healthz", "", "", "", "", 200)
	check("GET", "/readyz", "/readyz", "", "", "", "", 200)

	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"status":"busy","sessionId":"alice-tab1","metadata":{"page":"/docs"}}`, 200)
	check("POST", "/api/presence", "/api/presence", "", alice, "text/plain", `{"status":"online","sessionId":"alice-tab2"}`, 200)
	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"status":"asleep"}`, 400)
	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"status":`, 400)
	check("POST", "/api/presence", "/api/presence", "", "", J, `{"status":"online"}`, 401)
	check("POST", "/api/presence", "/api/presence", "", "forged.token.here", J, `{"status":"online"}`, 401)
	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"metadata":"`+strings.Repeat("x", 17<<10)+`"}`, 413)
	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"metadata":{"x":"`+strings.Repeat("x", 3<<10)+`"}}`, 400)

	b := check("GET", "/api/presence", "/api/presence", "userIds=alice,ghost", alice, "", "", 200)
	var got struct {
		Presence map[string]*struct{ Status string } `json:"presence"`
	}
	if json.Unmarshal(b, &got); got.Presence["ghost"] != nil || got.Presence["alice"] == nil || got.Presence["alice"].Status != "busy" {
		t.Fatalf("presence: %s", b)
	}
	check("GET", "/api/presence", "/api/presence", "userIds=", alice, "", "", 400)
	check("GET", "/api/presence", "/api/presence", "userIds="+strings.Repeat("u,", 100)+"u", alice, "", "", 400)

	check("POST", room, "/api/presence/room/lobby", "", alice, J, `{"action":"join","sessionId":"alice-tab1"}`, 200)
	check("POST", room, "/api/presence/room/lobby", "", alice, J, `{"action":"dance"}`, 400)
	check("POST", room, "/api/presence/room/bad%20room", "", alice, J, `{"action":"join"}`, 400)
	check("POST", room, "/api/presence/room/ops", "", onlyLobby, J, `{"action":"join"}`, 403)
	check("POST", room, "/api/presence/room/lobby", "", "", J, `{"action":"join"}`, 401)
	b = check("GET", room, "/api/presence/room/lobby", "", alice, "", "", 200)
	if !strings.Contains(string(b), `"count":1`) {
		t.Fatalf("room: %s", b)
	}
	check("GET", room, "/api/presence/room/ops", "", onlyLobby, "", "", 403)

	check("POST", typing, "/api/presence/room/lobby/typing", "", alice, J, `{"typing":true}`, 200)
	check("POST", typing, "/api/presence/room/lobby/typing", "", alice, J, `{}`, 400)
	b = check("GET", typing, "/api/presence/room/lobby/typing", "", alice, "", "", 200)
	if !strings.Contains(string(b), `"alice"`) {
		t.Fatalf("typing: %s", b)
	}

	// The user gone: offline with a lastSeen.
	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"status":"offline","sessionId":"alice-tab1"}`, 200)
	check("POST", "/api/presence", "/api/presence", "", alice, J, `{"status":"offline","sessionId":"alice-tab2"}`, 200)
	b = check("GET", "/api/presence", "/api/presence", "userIds=alice", alice, "", "", 200)
	if !strings.Contains(string(b), `"status":"offline"`) {
		t.Fatalf("after offline: %s", b)
	}

	// Refused streams answer the documented JSON errors.
	check("GET", "/sse", "/sse", "format=json", alice, "", "", 400)
	check("GET", "/sse", "/sse", "room=lobby&format=xml", alice, "", "", 400)
	check("GET", "/sse", "/sse", "room=lobby&format=json", "", "", "", 401)
	check("GET", "/sse", "/sse", "room=ops&format=json", onlyLobby, "", "", 403)
	check("GET", "/sse/room/{roomId}", "/sse/room/ops", "format=json", onlyLobby, "", "", 403)
	check("GET", "/sse/users", "/sse/users", "format=json", alice, "", "", 400)

	// A wrong method: 405 with the same error shape (no operation to
	// document it under).
	b = call("DELETE", "/api/presence", "", alice, "", "", 405)
	errSchema, err := s.compile(s.docsURL + "openapi.yaml#/components/schemas/Error")
	if err != nil {
		t.Fatal(err)
	}
	if err := errSchema.Validate(decodeAny(t, b)); err != nil {
		t.Fatalf("405 answer %s: %v", b, err)
	}
}

// rawStream reads a JSON stream with the spec parser (not the Go client,
// so that the schemas are checked against the bytes the gateway sends).
type rawStream struct {
	events chan eventstream.Event
	cancel context.CancelFunc
}

func openRaw(t *testing.T, g *gateway, path, token string) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		cancel()
		t.Fatalf("GET %s: %d", path, res.StatusCode)
	}
	rs := &rawStream{events: make(chan eventstream.Event, 256), cancel: cancel}
	go func() {
		defer close(rs.events)
		defer res.Body.Close()
		p := eventstream.NewParser(res.Body)
		for {
			ev, err := p.Next()
			if err != nil {
				return
			}
			if !ev.IsComment() {
				rs.events <- ev
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		for range rs.events {
		}
	})
	return rs
}

// collect validates every event until one matches until.
func (rs *rawStream) collect(t *testing.T, s *schemas, until func(eventstream.Event) bool) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-rs.events:
			if !ok {
				t.Fatal("stream ended")
			}
			s.checkEvent(t, ev)
			if until(ev) {
				return
			}
		case <-timeout:
			t.Fatal("timed out waiting for an event")
		}
	}
}

func is(name string, contains ...string) func(eventstream.Event) bool {
	return func(ev eventstream.Event) bool {
		if ev.Type != name {
			return false
		}
		for _, c := range contains {
			if !strings.Contains(ev.Data, c) {
				return false
			}
		}
		return true
	}
}

// TestSchemaStreamEvents opens the three JSON streams, makes every kind of
// change happen, and validates every event they send.
func TestSchemaStreamEvents(t *testing.T) {
	s := loadSchemas(t)
	g := startGateway(t, newStore(t, "memory"))
	bob := g.token(t, "bob", "Bob")
	alice := g.token(t, "alice", "Alice")
	post := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, g.base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("POST %s: %d", path, res.StatusCode)
		}
	}
	// alice is known (with metadata) before the streams open, so that the
	// users sync carries a full presence entry and a null one.
	post("/api/presence", `{"status":"online","sessionId":"alice-tab1","metadata":{"page":"/"}}`)

	multi := openRaw(t, g, "/sse?room=lobby&rooms=ops&users=alice,ghost&format=json", bob)
	watch := openRaw(t, g, "/sse/room/lobby?watch=1&format=json", bob)
	users := openRaw(t, g, "/sse/users?ids=alice,ghost&format=json", bob)
	syncs := 0
	multi.collect(t, s, func(ev eventstream.Event) bool {
		if ev.Type == "sync" {
			syncs++
		}
		return syncs == 3
	})
	watch.collect(t, s, is("sync", `"member":false`))
	users.collect(t, s, is("sync", `"topic":"users"`, `"ghost":null`, `"metadata":{"page":"/"}`))

	post("/api/presence/room/lobby", `{"action":"join","sessionId":"alice-tab1"}`)
	multi.collect(t, s, is("join", `"alice"`))
	watch.collect(t, s, is("join", `"alice"`))
	post("/api/presence", `{"status":"busy","sessionId":"alice-tab1"}`)
	multi.collect(t, s, is("status", `"to":"busy"`))
	users.collect(t, s, is("status", `"to":"busy"`))
	post("/api/presence/room/lobby/typing", `{"typing":true}`)
	multi.collect(t, s, is("typing", `"alice"`))
	post("/api/presence/room/lobby", `{"action":"leave","sessionId":"alice-tab1"}`)
	multi.collect(t, s, is("leave", `"alice"`))
	watch.collect(t, s, is("leave", `"alice"`))
	post("/api/presence", `{"status":"offline","sessionId":"alice-tab1"}`)
	users.collect(t, s, is("status", `"to":"offline"`))

	for _, want := range []string{"event sync", "sync sync-room.json", "sync sync-users.json", "event join", "event leave", "event status", "event typing"} {
		if !s.seen[want] {
			t.Errorf("not validated: %s", want)
		}
	}
}
