package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// bareMain runs the baseline of every stream scenario: a bare net/http SSE
// server, the way one writes it in an afternoon: one handler goroutine per
// stream with a small queue and a keep-alive ticker, fan-out by a
// non-blocking push of one pre-encoded frame to every subscriber under the
// room's lock, Write + Flush per event. No store, no templates, no debounce,
// no state-first machinery. It speaks just enough of presenced's routes for
// the streams, fanout and burst scenarios to run unchanged against it (each
// queued frame is written with its own Write + Flush, as such a server
// would):
//
//	GET  /sse/room/{room}, GET /sse?room=R   format=json (join/status/sync) or html (members with data-count, presence-{user})
//	POST /api/presence/room/{room}           {"action":"join"|"leave"} → a join/leave event to the room
//	POST /api/presence                       {"status":S} → a status event to the user's rooms
//	GET  /readyz, /metrics                   go_goroutines, memstats, presenced_sse_open_streams, presenced_streams_dropped_total
//
// Tokens are checked (HS256 signature over the same secret, claims sub and
// name) so that a connect costs what a minimal authenticated stream costs.
// Streams do not join their room (a stream here is watch-only); a
// subscriber with 4,096 frames queued is disconnected and counted as
// dropped.
func bareMain(args []string) int {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The gateway's flags, of which the bare server uses three.
	gw := flag.NewFlagSet("bare-gateway", flag.ContinueOnError)
	addr := gw.String("addr", "127.0.0.1:8080", "")
	secret := gw.String("secret", "", "")
	keepalive := gw.Duration("keepalive", 15*time.Second, "")
	gw.String("redis-url", "", "ignored")
	gw.Duration("ttl", 0, "ignored")
	gw.Duration("heartbeat", 0, "ignored")
	gw.Bool("rate-limit", false, "ignored (the bare server has no rate limits)")
	if err := gw.Parse(fs.Args()); err != nil {
		return 2
	}
	if err := checkLoopback(*addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *pprofAddr != "" {
		if err := checkLoopback(*pprofAddr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.ListenAndServe(*pprofAddr, mux) }()
	}
	b := newBare([]byte(*secret), *keepalive)
	srv := &http.Server{Addr: *addr, Handler: b.handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = srv.Serve(ln) }()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}

func newBare(secret []byte, keepalive time.Duration) *bareSrv {
	return &bareSrv{secret: secret, keepalive: keepalive, rooms: map[string]*bareRoom{}, userRooms: map[string]map[string]bool{}}
}

// handler routes the bare server's endpoints.
func (b *bareSrv) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /metrics", b.metrics)
	mux.HandleFunc("GET /sse/room/{room}", func(w http.ResponseWriter, r *http.Request) { b.stream(w, r, r.PathValue("room")) })
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) { b.stream(w, r, r.URL.Query().Get("room")) })
	mux.HandleFunc("POST /api/presence/room/{room}", b.postRoom)
	mux.HandleFunc("POST /api/presence", b.postStatus)
	return mux
}

// bareSub is one stream: a queue of frames behind a mutex and a one-slot
// wake-up channel (an idle stream holds no buffer; a channel of 256 frames
// would cost 6 KiB per stream and make the floor look worse than it is).
type bareSub struct {
	mu     sync.Mutex
	queue  [][]byte
	notify chan struct{}
	html   bool
	gone   chan struct{}
	once   sync.Once
}

// bareMaxQueued frames queued to one stream before it is dropped as slow.
const bareMaxQueued = 4096

func (s *bareSub) push(p []byte) bool {
	s.mu.Lock()
	if len(s.queue) >= bareMaxQueued {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, p)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return true
}

func (s *bareSub) kick() { s.once.Do(func() { close(s.gone) }) }

type bareRoom struct {
	subs    map[*bareSub]struct{}
	members map[string]bool
}

type bareSrv struct {
	secret    []byte
	keepalive time.Duration
	open      atomic.Int64
	dropped   atomic.Int64

	mu        sync.Mutex
	rooms     map[string]*bareRoom
	userRooms map[string]map[string]bool
}

func (b *bareSrv) roomLocked(id string) *bareRoom {
	r := b.rooms[id]
	if r == nil {
		r = &bareRoom{subs: map[*bareSub]struct{}{}, members: map[string]bool{}}
		b.rooms[id] = r
	}
	return r
}

// user checks an HS256 token and returns its sub and name.
func (b *bareSrv) user(r *http.Request) (string, string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", "", false
	}
	i, j := strings.IndexByte(tok, '.'), strings.LastIndexByte(tok, '.')
	if i < 0 || j <= i {
		return "", "", false
	}
	m := hmac.New(sha256.New, b.secret)
	m.Write([]byte(tok[:j]))
	sig, err := base64.RawURLEncoding.DecodeString(tok[j+1:])
	if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
		return "", "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(tok[i+1 : j])
	if err != nil {
		return "", "", false
	}
	var cl struct {
		Sub  string `json:"sub"`
		Name string `json:"name"`
		Exp  int64  `json:"exp"`
	}
	if json.Unmarshal(payload, &cl) != nil || cl.Sub == "" || cl.Exp < time.Now().Unix() {
		return "", "", false
	}
	return cl.Sub, cl.Name, true
}

func frame(event string, data []byte) []byte {
	out := make([]byte, 0, len(event)+len(data)+16)
	out = append(out, "event: "...)
	out = append(out, event...)
	out = append(out, "\ndata: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

func (b *bareSrv) stream(w http.ResponseWriter, r *http.Request, room string) {
	if _, _, ok := b.user(r); !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if room == "" {
		http.Error(w, "room needed", http.StatusBadRequest)
		return
	}
	s := &bareSub{notify: make(chan struct{}, 1), html: r.URL.Query().Get("format") != "json", gone: make(chan struct{})}
	b.mu.Lock()
	rm := b.roomLocked(room)
	rm.subs[s] = struct{}{}
	n := len(rm.members)
	b.mu.Unlock()
	b.open.Add(1)
	defer func() {
		b.open.Add(-1)
		b.mu.Lock()
		delete(rm.subs, s)
		b.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var first []byte
	if s.html {
		first = frame("members", fmt.Appendf(nil, `<div data-count="%d"></div>`, n))
	} else {
		first = frame("sync", fmt.Appendf(nil, `{"room":%q,"count":%d}`, room, n))
	}
	write := func(p []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(p); err != nil {
			return err
		}
		return rc.Flush()
	}
	if write(first) != nil {
		return
	}
	t := time.NewTicker(b.keepalive)
	defer t.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.gone:
			return
		case <-s.notify:
			s.mu.Lock()
			q := s.queue
			s.queue = nil
			s.mu.Unlock()
			for _, p := range q {
				if write(p) != nil {
					return
				}
			}
		case <-t.C:
			if write([]byte(": keepalive\n\n")) != nil {
				return
			}
		}
	}
}

// publishLocked sends one frame per format to every subscriber of room.
func (b *bareSrv) publishLocked(rm *bareRoom, js, html []byte) {
	for s := range rm.subs {
		p := js
		if s.html {
			p = html
		}
		if p == nil {
			continue
		}
		if !s.push(p) {
			b.dropped.Add(1)
			delete(rm.subs, s)
			s.kick()
		}
	}
}

func (b *bareSrv) postRoom(w http.ResponseWriter, r *http.Request) {
	uid, name, ok := b.user(r)
	if !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var body struct {
		Action string `json:"action"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil || (body.Action != "join" && body.Action != "leave") {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	room := r.PathValue("room")
	at := time.Now().UnixMilli()
	b.mu.Lock()
	rm := b.roomLocked(room)
	changed := rm.members[uid] != (body.Action == "join")
	if body.Action == "join" {
		rm.members[uid] = true
		if b.userRooms[uid] == nil {
			b.userRooms[uid] = map[string]bool{}
		}
		b.userRooms[uid][room] = true
	} else {
		delete(rm.members, uid)
		delete(b.userRooms[uid], room)
	}
	if changed {
		to := "online"
		if body.Action == "leave" {
			to = "offline"
		}
		js := frame(body.Action, fmt.Appendf(nil, `{"room":%q,"user":{"id":%q,"name":%q},"to":%q,"at":%d}`, room, uid, name, to, at))
		html := frame("members", fmt.Appendf(nil, `<div data-presence-room=%q data-count="%d"></div>`, room, len(rm.members)))
		b.publishLocked(rm, js, html)
	}
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("{}\n"))
}

func (b *bareSrv) postStatus(w http.ResponseWriter, r *http.Request) {
	uid, name, ok := b.user(r)
	if !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil || body.Status == "" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	at := time.Now().UnixMilli()
	js := frame("status", fmt.Appendf(nil, `{"user":{"id":%q,"name":%q},"to":%q,"at":%d}`, uid, name, body.Status, at))
	html := frame("presence-"+uid, fmt.Appendf(nil, `<span data-user-id=%q data-status=%q></span>`, uid, body.Status))
	b.mu.Lock()
	for room := range b.userRooms[uid] {
		b.publishLocked(b.rooms[room], js, html)
	}
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("{}\n"))
}

func (b *bareSrv) metrics(w http.ResponseWriter, r *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var buf bytes.Buffer
	p := func(k string, v float64) { buf.WriteString(k + " " + strconv.FormatFloat(v, 'g', -1, 64) + "\n") }
	p("go_goroutines", float64(runtime.NumGoroutine()))
	p("go_memstats_heap_inuse_bytes", float64(ms.HeapInuse))
	p("go_memstats_stack_inuse_bytes", float64(ms.StackInuse))
	p(`presenced_sse_open_streams{kind="room"}`, float64(b.open.Load()))
	p(`presenced_streams_dropped_total{reason="slow"}`, float64(b.dropped.Load()))
	p("presenced_stream_queue_resyncs_total", 0)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	w.Write(buf.Bytes())
}
