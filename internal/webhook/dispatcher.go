package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/presenced/presenced/store"
)

// Options configures a Dispatcher. Zero fields take the defaults below.
type Options struct {
	URLs   []string
	Secret []byte
	// RetryFor bounds how long one batch is retried (default 24 h); then its
	// events are counted as failed and logged.
	RetryFor time.Duration
	// Debounce: an offline followed by an online of the same user (a leave
	// followed by a join of the same room) within it delivers neither
	// (the streams' --leave-debounce). 0 = off.
	Debounce time.Duration
	// BatchSize (default 100) and BatchWait (default 1 s): a batch goes out
	// when it is full or BatchWait after its first event was queued.
	BatchSize int
	BatchWait time.Duration
	// QueueSize is each receiver's queue, in events (default 10,000); when
	// it is full the oldest event is dropped.
	QueueSize int
	// BackoffMin (default 1 s) and BackoffMax (default 10 min): retry n
	// waits a random time in [0, min(BackoffMax, BackoffMin·2ⁿ)] (full jitter).
	BackoffMin, BackoffMax time.Duration
	// Timeout is one POST's deadline (default 10 s).
	Timeout time.Duration
	// Visibility: see store.DeliveryOptions (default 30 s).
	Visibility time.Duration
	Client     *http.Client
	Log        *slog.Logger
	Metrics    *Metrics // nil: a private, unregistered set
}

func (o Options) withDefaults() Options {
	if o.RetryFor <= 0 {
		o.RetryFor = 24 * time.Hour
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.BatchWait <= 0 {
		o.BatchWait = time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 10 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{
			// A webhook URL is exact: a redirect is a misconfiguration.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Dispatcher delivers presence webhooks. Start it once; Stop it once.
type Dispatcher struct {
	opts      Options
	src       store.DeliverySource
	del       store.Deliveries
	log       *slog.Logger
	m         *Metrics
	receivers []*receiver

	mu   sync.Mutex
	refs map[string]int // delivery id → outstanding (receiver, event) pairs

	in    chan []store.Delivery
	acks  chan string
	holds []*hold

	claimCancel, sendCancel, ackCancel context.CancelFunc
	claimDone, procDone, ackDone       chan struct{}
	sendWG                             sync.WaitGroup
	draining                           chan struct{}
}

type hold struct {
	key, room string
	at        time.Time // the transition's time
	due       time.Time // wall clock: released then if nothing cancelled it
	del       string
	evs       []Event
}

// New validates opts and prepares a dispatcher on src.
func New(src store.DeliverySource, opts Options) (*Dispatcher, error) {
	opts = opts.withDefaults()
	if len(opts.URLs) == 0 {
		return nil, errors.New("webhook: no receiver URL")
	}
	if len(opts.Secret) == 0 {
		return nil, errors.New("webhook: a secret is required to sign webhooks")
	}
	d := &Dispatcher{
		opts: opts, src: src, log: opts.Log,
		refs: make(map[string]int),
		in:   make(chan []store.Delivery),
		acks: make(chan string, 4096),
	}
	d.m = opts.Metrics
	if d.m == nil {
		d.m = NewMetrics()
	}
	for _, raw := range opts.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("webhook: invalid receiver URL %q (want http:// or https://)", raw)
		}
		label := u.Host + u.Path
		r := &receiver{d: d, url: raw, label: label, wake: make(chan struct{}, 1)}
		d.m.init(label)
		d.receivers = append(d.receivers, r)
	}
	return d, nil
}

// Metrics returns the dispatcher's metrics (to register them).
func (d *Dispatcher) Metrics() *Metrics { return d.m }

// Start begins claiming transitions and delivering them.
func (d *Dispatcher) Start() error {
	del, err := d.src.Deliveries(store.DeliveryOptions{Group: "webhooks", Visibility: d.opts.Visibility})
	if err != nil {
		return err
	}
	d.del = del
	claimCtx, cc := context.WithCancel(context.Background())
	sendCtx, sc := context.WithCancel(context.Background())
	ackCtx, ac := context.WithCancel(context.Background())
	d.claimCancel, d.sendCancel, d.ackCancel = cc, sc, ac
	d.claimDone, d.procDone, d.ackDone = make(chan struct{}), make(chan struct{}), make(chan struct{})
	d.draining = make(chan struct{})
	go d.claimLoop(claimCtx)
	go d.processLoop()
	go d.ackLoop(ackCtx)
	for _, r := range d.receivers {
		d.sendWG.Add(1)
		go r.run(sendCtx)
	}
	return nil
}

// Stop stops claiming, releases held events, and gives the receivers until
// ctx ends to take what is queued. What is not delivered by then is not
// acknowledged: on Redis another node delivers it after the visibility
// timeout (on the memory store it is lost with the process).
func (d *Dispatcher) Stop(ctx context.Context) {
	if d.del == nil {
		return // never started
	}
	d.claimCancel()
	<-d.claimDone
	close(d.in)
	<-d.procDone
	close(d.draining)
	done := make(chan struct{})
	go func() { d.sendWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.sendCancel()
		<-done
	}
	d.sendCancel()
	d.ackCancel()
	<-d.ackDone
	_ = d.del.Close()
}

func (d *Dispatcher) claimLoop(ctx context.Context) {
	defer close(d.claimDone)
	failures := 0
	for ctx.Err() == nil {
		ds, err := d.del.Claim(ctx, d.opts.BatchSize)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
				return
			}
			failures++
			d.log.Warn("webhook: claiming transitions failed; retrying", "error", err)
			sleep(ctx, min(time.Duration(failures)*time.Second, 10*time.Second))
			continue
		}
		failures = 0
		fresh := ds[:0]
		d.mu.Lock()
		for _, x := range ds {
			// Re-claimed after Visibility while still ours (a long retry):
			// it is already on its way.
			if _, held := d.refs[x.ID]; held {
				continue
			}
			d.refs[x.ID] = 1 // released by process once it is routed
			fresh = append(fresh, x)
		}
		d.mu.Unlock()
		if len(fresh) > 0 {
			select {
			case d.in <- fresh:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (d *Dispatcher) processLoop() {
	defer close(d.procDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if len(d.holds) > 0 {
			timer.Reset(max(time.Until(d.holds[0].due), 0))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case ds, ok := <-d.in:
			if !ok {
				d.releaseWhere(func(*hold) bool { return true })
				return
			}
			for _, x := range ds {
				d.process(x)
			}
		case <-timer.C:
			now := time.Now()
			d.releaseWhere(func(h *hold) bool { return !h.due.After(now) })
		}
	}
}

func (d *Dispatcher) process(x store.Delivery) {
	e := x.Event
	// A hold older than this transition by more than Debounce cannot be
	// cancelled any more (the log is in order): it goes out first.
	if d.opts.Debounce > 0 {
		d.releaseWhere(func(h *hold) bool { return e.At.Sub(h.at) > d.opts.Debounce })
	}
	base := Event{ID: x.ID, At: e.At, User: e.User}
	switch e.Kind {
	case store.EventStatus:
		switch {
		case e.To == store.StatusOffline:
			ev := base
			ev.Type, ev.Status, ev.PreviousStatus = TypeUserOffline, store.StatusOffline, e.From
			d.holdOrEmit("u:"+e.User.ID, "", x.ID, e.At, []Event{ev})
		case e.From == store.StatusOffline || e.From == "":
			if d.cancel("u:"+e.User.ID, x.ID) {
				return
			}
			ev := base
			ev.Type, ev.Status, ev.PreviousStatus = TypeUserOnline, e.To, store.StatusOffline
			d.emit(x.ID, []Event{ev})
		default:
			ev := base
			ev.Type, ev.Status, ev.PreviousStatus = TypeUserStatus, e.To, e.From
			d.emit(x.ID, []Event{ev})
		}
	case store.EventJoin:
		key := "r:" + e.Room + "\x00" + e.User.ID
		if d.cancel(key, x.ID) {
			return
		}
		// The room's other held leaves (and its vacated) come before.
		d.releaseWhere(func(h *hold) bool { return h.room == e.Room })
		ev := base
		ev.Type, ev.Room, ev.Status = TypeRoomJoin, e.Room, e.To
		evs := []Event{ev}
		if e.Members == 1 { // the store counts members inside the transition
			evs = append(evs, Event{ID: x.ID + ".occupied", Type: TypeRoomOccupied, At: e.At, User: e.User, Room: e.Room})
		}
		d.emit(x.ID, evs)
	case store.EventLeave:
		ev := base
		ev.Type, ev.Room, ev.Status = TypeRoomLeave, e.Room, e.To
		evs := []Event{ev}
		if e.Members == 0 {
			evs = append(evs, Event{ID: x.ID + ".vacated", Type: TypeRoomVacated, At: e.At, User: e.User, Room: e.Room})
		}
		d.holdOrEmit("r:"+e.Room+"\x00"+e.User.ID, e.Room, x.ID, e.At, evs)
	case store.EventResync:
		d.log.Warn("webhook: the store's feed may have missed transitions; they will not be delivered")
		d.done(x.ID)
	default: // typing is not a webhook event
		d.done(x.ID)
	}
}

func (d *Dispatcher) holdOrEmit(key, room, del string, at time.Time, evs []Event) {
	if d.opts.Debounce <= 0 {
		d.emit(del, evs)
		return
	}
	d.holds = append(d.holds, &hold{key: key, room: room, at: at, due: time.Now().Add(d.opts.Debounce), del: del, evs: evs})
}

// cancel drops the hold under key, if any, with the transition that undid it.
func (d *Dispatcher) cancel(key, del string) bool {
	for i, h := range d.holds {
		if h.key == key {
			d.holds = append(d.holds[:i], d.holds[i+1:]...)
			d.m.suppressed.Add(float64(len(h.evs) + 1))
			d.done(h.del)
			d.done(del)
			return true
		}
	}
	return false
}

func (d *Dispatcher) releaseWhere(f func(*hold) bool) {
	kept := d.holds[:0]
	for _, h := range d.holds {
		if f(h) {
			d.emit(h.del, h.evs)
		} else {
			kept = append(kept, h)
		}
	}
	clear(d.holds[len(kept):])
	d.holds = kept
}

// emit queues evs (all from delivery del) to every receiver; del is
// acknowledged when every receiver is done with every one of them.
func (d *Dispatcher) emit(del string, evs []Event) {
	d.mu.Lock()
	d.refs[del] += len(evs) * len(d.receivers)
	d.mu.Unlock()
	for _, r := range d.receivers {
		r.push(del, evs)
	}
	d.done(del) // the routing reference taken in claimLoop
}

// done releases one reference to delivery del.
func (d *Dispatcher) done(del string) {
	d.mu.Lock()
	n := d.refs[del] - 1
	if n > 0 {
		d.refs[del] = n
		d.mu.Unlock()
		return
	}
	delete(d.refs, del)
	d.mu.Unlock()
	d.acks <- del
}

func (d *Dispatcher) ackLoop(ctx context.Context) {
	defer close(d.ackDone)
	var ids []string
	flush := func() {
		if len(ids) == 0 {
			return
		}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.del.Ack(c, ids...); err != nil {
			d.log.Warn("webhook: acknowledging deliveries failed; they may be delivered again", "n", len(ids), "error", err)
		}
		cancel()
		ids = ids[:0]
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case id := <-d.acks:
			ids = append(ids, id)
			if len(ids) >= 500 {
				flush()
			}
		case <-tick.C:
			flush()
		case <-ctx.Done():
			for {
				select {
				case id := <-d.acks:
					ids = append(ids, id)
				default:
					flush()
					return
				}
			}
		}
	}
}

type item struct {
	del string
	ev  Event
}

// receiver is one URL's queue and sender.
type receiver struct {
	d     *Dispatcher
	url   string
	label string
	mu    sync.Mutex
	q     []item
	wake  chan struct{}
}

func (r *receiver) push(del string, evs []Event) {
	var dropped []item
	r.mu.Lock()
	for _, e := range evs {
		r.q = append(r.q, item{del, e})
	}
	if over := len(r.q) - r.d.opts.QueueSize; over > 0 {
		dropped = append(dropped, r.q[:over]...)
		r.q = append(r.q[:0:0], r.q[over:]...)
	}
	depth := len(r.q)
	r.mu.Unlock()
	r.d.m.depth.WithLabelValues(r.label).Set(float64(depth))
	if len(dropped) > 0 {
		r.d.m.dropped.WithLabelValues(r.label).Add(float64(len(dropped)))
		r.d.log.Warn("webhook: receiver queue full; dropped its oldest events", "receiver", r.label, "dropped", len(dropped), "oldest", dropped[0].ev.ID)
		for _, it := range dropped {
			r.d.done(it.del)
		}
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *receiver) take() []item {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(r.q), r.d.opts.BatchSize)
	out := append([]item(nil), r.q[:n]...)
	r.q = append(r.q[:0:0], r.q[n:]...)
	r.d.m.depth.WithLabelValues(r.label).Set(float64(len(r.q)))
	return out
}

func (r *receiver) depth() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.q)
}

func (r *receiver) run(ctx context.Context) {
	defer r.d.sendWG.Done()
	for {
		draining := false
		for r.depth() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			case <-r.d.draining:
				if r.depth() == 0 {
					return
				}
				draining = true
			}
		}
		// Linger for a fuller batch, unless stopping.
		if !draining {
			t := time.NewTimer(r.d.opts.BatchWait)
		linger:
			for r.depth() < r.d.opts.BatchSize {
				select {
				case <-r.wake:
				case <-t.C:
					break linger
				case <-r.d.draining:
					break linger
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
			t.Stop()
		}
		batch := r.take()
		if !r.send(ctx, batch) {
			return // stopping: not acknowledged, another node takes over
		}
		for _, it := range batch {
			r.d.done(it.del)
		}
	}
}

// send POSTs batch until it is accepted or RetryFor has passed; false
// only when ctx ended first.
func (r *receiver) send(ctx context.Context, batch []item) bool {
	evs := make([]Event, len(batch))
	for i, it := range batch {
		evs[i] = it.ev
	}
	b := Batch{ID: batchID(evs), Events: evs}
	body, err := json.Marshal(b)
	if err != nil { // cannot happen: plain strings and times
		r.d.log.Error("webhook: encoding a batch failed", "error", err)
		return true
	}
	o := r.d.opts
	start := time.Now()
	for attempt := 0; ; attempt++ {
		status, err := r.post(ctx, b.ID, body)
		if err == nil && status/100 == 2 {
			now := time.Now()
			r.d.m.delivered.WithLabelValues(r.label).Add(float64(len(evs)))
			for _, e := range evs {
				r.d.m.latency.WithLabelValues(r.label).Observe(now.Sub(e.At).Seconds())
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		left := o.RetryFor - time.Since(start)
		if left <= 0 {
			r.d.m.failed.WithLabelValues(r.label).Add(float64(len(evs)))
			r.d.log.Error("webhook: giving up on a batch after retrying", "receiver", r.label, "batch", b.ID, "events", len(evs), "attempts", attempt+1, "status", status, "error", err)
			return true
		}
		if attempt == 0 {
			r.d.log.Warn("webhook: delivery failed; retrying with backoff", "receiver", r.label, "batch", b.ID, "status", status, "error", err)
		}
		r.d.m.retried.WithLabelValues(r.label).Add(float64(len(evs)))
		if !sleep(ctx, min(Backoff(attempt, o.BackoffMin, o.BackoffMax), left)) {
			return false
		}
	}
}

// Backoff is the wait before retry n (0-based): full jitter, a uniform
// random time in [0, min(max, base·2ⁿ)].
func Backoff(n int, base, max time.Duration) time.Duration {
	ceil := max
	if n < 62 {
		if c := base << n; c > 0 && c < max {
			ceil = c
		}
	}
	return rand.N(ceil + 1)
}

func (r *receiver) post(ctx context.Context, batchID string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "presenced-webhooks/1")
	req.Header.Set("Idempotency-Key", batchID)
	// Signed per attempt: the timestamp is when this attempt was sent.
	req.Header.Set(SignatureHeader, Sign(r.d.opts.Secret, body, time.Now()))
	resp, err := r.d.opts.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
