package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
)

// verify is the README's Go receiver example, verbatim.
func verify(secret []byte, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	var ts, sig string
	for _, kv := range strings.Split(r.Header.Get("Presenced-Signature"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		if k == "t" {
			ts = v
		} else if k == "v1" {
			sig = v
		}
	}
	t, _ := strconv.ParseInt(ts, 10, 64)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "." + string(body)))
	ok := err == nil && time.Since(time.Unix(t, 0)).Abs() < 5*time.Minute &&
		hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(sig))
	return body, ok
}

// The README's Go receiver accepts what the dispatcher really sends, and
// refuses a wrong secret, a changed body and an old timestamp.
func TestReadmeGoReceiverVerifies(t *testing.T) {
	var good, bad atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := verify(testSecret, r); !ok {
			bad.Add(1)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		good.Add(1)
	}))
	defer srv.Close()
	st := store.NewMemory(store.Options{})
	defer st.Close()
	d := startDispatcher(t, st, fastOpts(srv.URL))
	if err := st.Heartbeat(context.Background(), hb("u", "s")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a verified delivery", func() bool { return good.Load() == 1 })
	stop(d)
	if bad.Load() != 0 {
		t.Errorf("%d deliveries failed verification", bad.Load())
	}

	body := []byte(`{"id":"b_x","events":[]}`)
	check := func(header string, body []byte) bool {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		r.Header.Set(SignatureHeader, header)
		_, ok := verify(testSecret, r)
		return ok
	}
	now := time.Now()
	if !check(Sign(testSecret, body, now), body) {
		t.Error("a good signature was refused")
	}
	if check(Sign([]byte("other"), body, now), body) {
		t.Error("a wrong secret was accepted")
	}
	if check(Sign(testSecret, body, now), []byte(`{"id":"b_y","events":[]}`)) {
		t.Error("a changed body was accepted")
	}
	if check(Sign(testSecret, body, now.Add(-10*time.Minute)), body) {
		t.Error("a replay (old timestamp) was accepted")
	}
	// The package's own Verify agrees.
	if !Verify(testSecret, body, Sign(testSecret, body, now), 5*time.Minute, now) ||
		Verify(testSecret, body, Sign(testSecret, body, now.Add(-time.Hour)), 5*time.Minute, now) {
		t.Error("Verify disagrees")
	}
}
