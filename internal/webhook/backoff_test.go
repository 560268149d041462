package webhook

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The retry schedule, in fake time: every wait is within the full-jitter
// bound min(max, base·2ⁿ), the waits are random (not all at the bound),
// and retrying stops RetryFor after the first attempt, counting the batch
// as failed.
func TestBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var at []time.Time
		client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			return nil, errors.New("connection refused")
		})}
		const base, ceil, retryFor = time.Second, time.Minute, time.Hour
		d, err := New(nil, Options{URLs: []string{"http://receiver/x"}, Secret: testSecret, Client: client,
			BackoffMin: base, BackoffMax: ceil, RetryFor: retryFor, Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		r := d.receivers[0]
		start := time.Now()
		if !r.send(context.Background(), []item{{del: "1-0", ev: Event{ID: "1-0", Type: TypeUserOnline}}}) {
			t.Fatal("send reported a stop")
		}
		if len(at) < 10 {
			t.Fatalf("only %d attempts in %s", len(at), retryFor)
		}
		atBound := 0
		for n := 1; n < len(at); n++ {
			gap := at[n].Sub(at[n-1])
			bound := ceil
			if n-1 < 20 {
				bound = min(ceil, base<<(n-1))
			}
			if gap > bound {
				t.Errorf("wait %d = %s > bound %s", n, gap, bound)
			}
			if gap == bound {
				atBound++
			}
		}
		if atBound == len(at)-1 {
			t.Error("no jitter: every wait was at its bound")
		}
		if last := at[len(at)-1].Sub(start); last > retryFor || last < retryFor-ceil {
			t.Errorf("last attempt %s after the first; want within %s of %s", last, ceil, retryFor)
		}
		if got := testutil.ToFloat64(d.m.failed.WithLabelValues("receiver/x")); got != 1 {
			t.Errorf("failed = %v, want 1", got)
		}
		if got := testutil.ToFloat64(d.m.retried.WithLabelValues("receiver/x")); got != float64(len(at)-1) {
			t.Errorf("retried = %v, want %d", got, len(at)-1)
		}
	})
}

// A stop in the middle of a backoff returns at once, unacknowledged.
func TestBackoffStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := &http.Client{Transport: roundTrip(func(*http.Request) (*http.Response, error) {
			return nil, errors.New("down")
		})}
		d, _ := New(nil, Options{URLs: []string{"http://receiver/x"}, Secret: testSecret, Client: client, Log: quiet()})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(5*time.Minute, cancel)
		if d.receivers[0].send(ctx, []item{{ev: Event{ID: "1-0"}}}) {
			t.Error("send claimed success after a stop")
		}
	})
}

func TestBackoffBound(t *testing.T) {
	for n := range 100 {
		if b := Backoff(n, time.Second, time.Minute); b < 0 || b > min(time.Minute, time.Second<<min(n, 62)) && n < 6 || b > time.Minute {
			t.Fatalf("Backoff(%d) = %s", n, b)
		}
	}
}
