// Package webhook tells host applications about presence transitions: it
// takes the store's transitions (store.Deliveries: exactly one consumer
// across all gateway nodes), maps them to webhook events, suppresses flaps,
// batches them and POSTs them, signed, to every receiver, retrying with
// exponential backoff and full jitter for a bounded time. Each receiver has
// its own bounded queue and sender, so a slow or failing receiver delays
// neither the others nor the SSE fan-out (which reads the feed on its own).
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/presenced/presenced/store"
)

// Event types.
const (
	TypeUserOnline   = "user.online"   // the user's first session started
	TypeUserOffline  = "user.offline"  // the user's last session ended
	TypeUserStatus   = "user.status"   // status changed between online, away, busy
	TypeRoomJoin     = "room.join"     // the user became a member of the room
	TypeRoomLeave    = "room.leave"    // the user stopped being a member
	TypeRoomOccupied = "room.occupied" // the room got its first member
	TypeRoomVacated  = "room.vacated"  // the room's last member left
)

// Event is one webhook event (docs/schema/webhook.json).
type Event struct {
	// ID is unique per transition and the same on every retry and every
	// node: the receiver's idempotency key.
	ID   string        `json:"id"`
	Type string        `json:"type"`
	At   time.Time     `json:"at"`
	User store.Profile `json:"user"`
	// Status is the user's status after the event (offline on
	// user.offline); PreviousStatus the one before (user.* only).
	Status         store.Status `json:"status,omitempty"`
	PreviousStatus store.Status `json:"previousStatus,omitempty"`
	Room           string       `json:"room,omitempty"`
}

// Batch is one POST body.
type Batch struct {
	// ID is the batch's idempotency key (also in the Idempotency-Key
	// header): the same for every retry of these events.
	ID     string  `json:"id"`
	Events []Event `json:"events"`
}

// SignatureHeader carries t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
const SignatureHeader = "Presenced-Signature"

// Sign returns the signature header value for body at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature header against body: a v1 that matches and a
// timestamp within tolerance of now (replays are refused). It is what a Go
// receiver needs.
func Verify(secret, body []byte, header string, tolerance time.Duration, now time.Time) bool {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return false
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

// batchID is derived from the events it holds, so a batch rebuilt by
// another node after a takeover keeps its key.
func batchID(evs []Event) string {
	h := sha256.New()
	for _, e := range evs {
		h.Write([]byte(e.ID))
		h.Write([]byte{0})
	}
	return "b_" + hex.EncodeToString(h.Sum(nil))[:32]
}
