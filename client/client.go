package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	sse "github.com/r3labs/sse/v2"
	backoff "gopkg.in/cenkalti/backoff.v1"
)

// Endpoint selects which of the gateway's stream URLs the client opens.
type Endpoint int

const (
	// EndpointSSE is GET /sse?room=…&rooms=…&users=…&watch=1: any set of
	// topics on one connection (the default).
	EndpointSSE Endpoint = iota
	// EndpointRoom is the v1 room stream GET /sse/room/{Room} (Rooms, Users
	// and Watch are sent as query parameters, which it also takes).
	EndpointRoom
	// EndpointUsers is the v1 users stream GET /sse/users?ids=… (Users
	// only).
	EndpointUsers
)

// Config says where to connect and what to follow.
type Config struct {
	// BaseURL is the gateway's URL, e.g. "https://presence.example.com";
	// a path prefix ("https://example.com/presence") is kept.
	BaseURL  string
	Endpoint Endpoint

	// Room is the stream's primary room: joined as the token's user unless
	// Watch is set. Rooms are further rooms, watched only; Users are users
	// whose presence to follow (at most 100).
	Room  string
	Rooms []string
	Users []string
	Watch bool
	// SessionID is the session the stream holds in Room (sent as ?sid=).
	// Empty: the gateway assigns one, and the client keeps it (from the
	// first sync) for its reconnects.
	SessionID string

	// Token is sent as "Authorization: Bearer {Token}". TokenFunc, when
	// set, is called before every connection attempt instead (a source of
	// fresh tokens: a gateway ends a stream when its token expires, and
	// answers 401 to an expired one). With TokenFunc a 401 is retried;
	// without, it ends Run.
	Token     string
	TokenFunc func(ctx context.Context) (string, error)

	// HTTPClient makes the requests (default: a client without a timeout,
	// which would cut the stream). Its Timeout must be 0.
	HTTPClient *http.Client

	// MinBackoff and MaxBackoff bound the reconnect delay: attempt n after
	// a failure waits a random time in [d/2, d] with d = MinBackoff·2ⁿ
	// capped at MaxBackoff (defaults 250 ms and 30 s). The count starts
	// over once a connection delivered its state.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout: a stream that sends nothing for this long (the gateway
	// sends a keep-alive comment at least every 30 s) is closed and
	// reopened (default 45 s; negative: never).
	IdleTimeout time.Duration
	// MaxEventSize bounds one event (a sync of a big room; default 8 MiB).
	// r3labs' own default, 64 KiB, would make a room of a few hundred
	// members unreadable: the read fails and every reconnect fails again.
	MaxEventSize int

	// Buffer is the capacity of the Events channel (default 256). When it
	// is full the client stops reading the stream until there is room;
	// a gateway drops a reader that stalls, and the client then
	// reconnects and resyncs.
	Buffer int
	// OnEvent, when set, is called with every event, on the client's
	// reading goroutine, instead of sending it to the Events channel.
	OnEvent func(Event)
}

// StatusError is a connection attempt the gateway refused.
type StatusError struct {
	Code    int
	Message string // the gateway's {"error": …}, or the status text
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("client: gateway answered %d: %s", e.Code, e.Message)
}

// retryable says whether a refused attempt may succeed later unchanged.
func (e *StatusError) retryable(haveTokenFunc bool) bool {
	switch {
	case e.Code == http.StatusUnauthorized:
		return haveTokenFunc
	case e.Code == http.StatusRequestTimeout, e.Code == http.StatusTooManyRequests:
		return true
	}
	return e.Code >= 500
}

// ErrNotEventStream is a 200 answer that is not text/event-stream (a
// proxy's error page, a wrong URL).
var ErrNotEventStream = errors.New("client: answer is not text/event-stream")

// errEnded is a stream the gateway closed (shutdown, token expiry).
var errEnded = errors.New("client: the gateway ended the stream")

// Client follows a gateway's JSON stream and keeps a view of it.
type Client struct {
	cfg    Config
	events chan Event
	hc     *http.Client

	mu        sync.Mutex
	running   bool
	sessionID string
	rooms     map[string]*Room
	users     map[string]*Presence // nil value: a user never seen
	usersSync bool
}

// New checks cfg and returns a client; Run connects it.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("client: BaseURL is required")
	}
	if _, err := url.Parse(cfg.BaseURL); err != nil {
		return nil, fmt.Errorf("client: BaseURL: %w", err)
	}
	switch cfg.Endpoint {
	case EndpointSSE:
		if cfg.Room == "" && len(cfg.Rooms) == 0 && len(cfg.Users) == 0 {
			return nil, errors.New("client: a stream needs Room, Rooms or Users")
		}
	case EndpointRoom:
		if cfg.Room == "" {
			return nil, errors.New("client: EndpointRoom needs Room")
		}
	case EndpointUsers:
		if len(cfg.Users) == 0 || cfg.Room != "" || len(cfg.Rooms) > 0 {
			return nil, errors.New("client: EndpointUsers takes Users only")
		}
	default:
		return nil, errors.New("client: unknown Endpoint")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	} else if cfg.HTTPClient.Timeout != 0 {
		return nil, errors.New("client: HTTPClient.Timeout must be 0 (it would cut the stream); use IdleTimeout")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 45 * time.Second
	}
	if cfg.MaxEventSize <= 0 {
		cfg.MaxEventSize = 8 << 20
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 256
	}
	c := &Client{
		cfg: cfg, hc: cfg.HTTPClient, sessionID: cfg.SessionID,
		events: make(chan Event, cfg.Buffer),
		rooms:  map[string]*Room{}, users: map[string]*Presence{},
	}
	for i, id := range c.roomIDs() {
		c.rooms[id] = &Room{ID: id, Member: i == 0 && cfg.Room != "" && !cfg.Watch}
	}
	for _, id := range cfg.Users {
		c.users[id] = nil
	}
	return c, nil
}

func (c *Client) roomIDs() []string {
	var ids []string
	if c.cfg.Room != "" {
		ids = append(ids, c.cfg.Room)
	}
	for _, r := range c.cfg.Rooms {
		if r != c.cfg.Room {
			ids = append(ids, r)
		}
	}
	return ids
}

// Events delivers the stream's events (unless Config.OnEvent is set). It
// is closed when Run returns.
func (c *Client) Events() <-chan Event { return c.events }

// Room returns a copy of the view of a followed room.
func (c *Client) Room(id string) (Room, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rooms[id]
	if !ok {
		return Room{}, false
	}
	return r.clone(), true
}

// Users returns a copy of the followed users' presence; a user never seen
// by the gateway maps to nil.
func (c *Client) Users() map[string]*Presence {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]*Presence, len(c.users))
	for id, p := range c.users {
		if p != nil {
			cp := *p
			cp.Metadata = append(json.RawMessage(nil), p.Metadata...)
			p = &cp
		}
		out[id] = p
	}
	return out
}

// Synced reports whether every followed topic has had its sync on the
// current connection: the view is then the gateway's state plus the
// changes since.
func (c *Client) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cfg.Users) > 0 && !c.usersSync {
		return false
	}
	for _, r := range c.rooms {
		if !r.Synced {
			return false
		}
	}
	return true
}

// SessionID is the session the stream holds in its room (assigned by the
// gateway when Config.SessionID was empty; empty before the first sync).
func (c *Client) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

// streamURL builds the URL of the next attempt.
func (c *Client) streamURL() string {
	q := url.Values{}
	q.Set("format", "json")
	base := strings.TrimRight(c.cfg.BaseURL, "/")
	var path string
	switch c.cfg.Endpoint {
	case EndpointUsers:
		path = "/sse/users"
		q.Set("ids", strings.Join(c.cfg.Users, ","))
	case EndpointRoom:
		path = "/sse/room/" + url.PathEscape(c.cfg.Room)
	default:
		path = "/sse"
		if c.cfg.Room != "" {
			q.Set("room", c.cfg.Room)
		}
	}
	if c.cfg.Endpoint != EndpointUsers {
		if len(c.cfg.Rooms) > 0 {
			q.Set("rooms", strings.Join(c.cfg.Rooms, ","))
		}
		if len(c.cfg.Users) > 0 {
			q.Set("users", strings.Join(c.cfg.Users, ","))
		}
		if c.cfg.Watch {
			q.Set("watch", "1")
		}
		c.mu.Lock()
		if sid := c.sessionID; sid != "" && c.cfg.Room != "" && !c.cfg.Watch {
			q.Set("sid", sid)
		}
		c.mu.Unlock()
	}
	return base + path + "?" + q.Encode()
}

// Run connects and follows the stream until ctx is done (it then returns
// ctx's error) or the gateway refuses it for good (a *StatusError: 400,
// 403, 404, or 401 without TokenFunc). Every connection starts with the
// gateway's sync events, which replace the view; a dropped connection is
// retried with jittered exponential backoff. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("client: Run called twice")
	}
	c.running = true
	c.mu.Unlock()
	defer close(c.events)

	attempt := 0
	for {
		healthy, err := c.connect(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.unsync()
		var se *StatusError
		if errors.As(err, &se) && !se.retryable(c.cfg.TokenFunc != nil) {
			c.emit(ctx, Event{Type: EventDisconnected, Err: err})
			return err
		}
		if healthy {
			attempt = 0
		}
		d := c.backoff(attempt)
		attempt++
		if err == nil {
			err = errEnded
		}
		c.emit(ctx, Event{Type: EventDisconnected, Err: err, Retry: d})
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the delay before attempt n (0-based) after a failure: a random
// time in [d/2, d], d = MinBackoff·2ⁿ capped at MaxBackoff. The jitter keeps
// the clients of a restarted gateway from all coming back at once.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.MaxBackoff
	if n < 32 {
		if e := c.cfg.MinBackoff << n; e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

// unsync marks every topic as waiting for its sync (the connection is
// gone; the view is the last state seen).
func (c *Client) unsync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.usersSync = false
	for _, r := range c.rooms {
		r.Synced = false
	}
}

// connect runs one connection with r3labs' client, and reports whether
// it delivered its state (so that the backoff starts over).
func (c *Client) connect(ctx context.Context) (healthy bool, err error) {
	token := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		if token, err = c.cfg.TokenFunc(ctx); err != nil {
			return false, fmt.Errorf("client: TokenFunc: %w", err)
		}
	}
	// A fresh r3labs client per attempt: its reconnect loop is not used
	// (StopBackOff) because it ends for good when a stream ends cleanly
	// and does not watch ctx while it waits, and a fresh one sends no
	// Last-Event-ID, which the gateway does not use (its ids count per
	// connection; state-first resync replaces replay).
	sc := sse.NewClient(c.streamURL(), sse.ClientMaxBufferSize(c.cfg.MaxEventSize))
	sc.Connection = c.hc
	sc.ReconnectStrategy = &backoff.StopBackOff{}
	if token != "" {
		sc.Headers["Authorization"] = "Bearer " + token
	}
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sc.ResponseValidator = func(_ *sse.Client, resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			defer resp.Body.Close()
			return readStatusError(resp)
		}
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
			resp.Body.Close()
			return ErrNotEventStream
		}
		// The hook r3labs offers between the response and its parser:
		// hand it a body with CR and CRLF line ends made LF (lines.go).
		resp.Body = newLineReader(resp.Body, c.cfg.IdleTimeout)
		c.emit(connCtx, Event{Type: EventConnected})
		return nil
	}
	err = sc.SubscribeRawWithContext(connCtx, func(m *sse.Event) {
		if ev, ok := c.apply(m); ok {
			if ev.Type == EventSync && c.Synced() {
				healthy = true
			}
			c.emit(connCtx, ev)
		}
	})
	return healthy, err
}

func readStatusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := http.StatusText(resp.StatusCode)
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		msg = body.Error
	}
	return &StatusError{Code: resp.StatusCode, Message: msg}
}

// emit delivers an event (or drops it when ctx is done).
func (c *Client) emit(ctx context.Context, ev Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(ev)
		return
	}
	select {
	case c.events <- ev:
	case <-ctx.Done():
	}
}
