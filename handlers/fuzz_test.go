package handlers

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/presenced/presenced/store"
)

// Fuzz targets for everything that decodes untrusted input. Their seed
// corpora run as plain tests in `make test`; `go test -fuzz=FuzzX` explores.

// Every error must be a 400 (errors.Is store.ErrInvalid), never a panic; an
// accepted body must satisfy the store's own validation.
func FuzzPresenceBody(f *testing.F) {
	for _, s := range []string{
		`{"status":"online"}`, `{"status":"offline","sessionId":"abcdefgh"}`, `{}`, `{"status":"away","metadata":{"a":1}}`,
		`{"metadata":null}`, `{"metadata":"x"}`, `{"status":null}`, `[]`, `{"status":"busy"} {}`, "\xff", `{"sessionId":"` + strings.Repeat("a", 65) + `"}`,
		`{"status":"online","metadata":{"x":"` + strings.Repeat("a", 2100) + `"}}`, `{"Status":"BUSY"}`, ` {"status":"busy"} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parsePresenceRequest(data)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("error %v does not map to 400", err)
			}
			return
		}
		if req.Status != store.StatusOffline {
			if _, ok := store.ParseStatus(string(req.Status)); !ok {
				t.Fatalf("accepted status %q", req.Status)
			}
		}
		if !store.ValidSessionID(req.SessionID) {
			t.Fatalf("accepted session id %q", req.SessionID)
		}
		if err := store.ValidateMetadata(req.Metadata); err != nil {
			t.Fatalf("accepted metadata %q: %v", req.Metadata, err)
		}
	})
}

func FuzzRoomActionBody(f *testing.F) {
	for _, s := range []string{`{"action":"join"}`, `{"action":"leave","sessionId":"abcdefgh"}`, `{"action":"dance"}`, `{"action":1}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := parseRoomAction(data)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("error %v does not map to 400", err)
			}
			return
		}
		if !store.ValidSessionID(a.SessionID) {
			t.Fatalf("accepted session id %q", a.SessionID)
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
	})
}

func FuzzTypingBody(f *testing.F) {
	for _, s := range []string{`{"typing":true}`, `{"typing":false}`, `{"typing":"true"}`, `{}`, `{"typing":1}`, `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := parseTyping(data); err != nil && !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("error %v does not map to 400", err)
		}
	})
}

var (
	userIDRe    = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)
	sessionIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
)

// The id validators agree with the contract's rule written as a regexp.
func FuzzIDValidators(f *testing.F) {
	for _, s := range []string{"alice", "a", "", "al ice", "doc:1@team.x-y_z", strings.Repeat("a", 128), strings.Repeat("a", 129),
		"abcdefgh", "abc", "ab:cdefgh", "é", "a\x00b", "<img>", strings.Repeat("s", 64), strings.Repeat("s", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := store.ValidUserID(s), userIDRe.MatchString(s); got != want {
			t.Fatalf("ValidUserID(%q) = %v, contract says %v", s, got, want)
		}
		if got, want := store.ValidRoomID(s), userIDRe.MatchString(s); got != want {
			t.Fatalf("ValidRoomID(%q) = %v, contract says %v", s, got, want)
		}
		if got, want := store.ValidSessionID(s), sessionIDRe.MatchString(s); got != want {
			t.Fatalf("ValidSessionID(%q) = %v, contract says %v", s, got, want)
		}
	})
}

// parseIDList accepts 1–100 valid ids, deduplicated, or fails with a 400.
func FuzzIDList(f *testing.F) {
	for _, s := range []string{"a,b,c", "", ",", "a,,b", "a,a", " a , b ", "a b", strings.Repeat("x,", 100) + "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := parseIDList(s)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("error %v does not map to 400", err)
			}
			return
		}
		if len(ids) == 0 || len(ids) > store.MaxBatch {
			t.Fatalf("%d ids accepted", len(ids))
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if !store.ValidUserID(id) || seen[id] || !utf8.ValidString(id) {
				t.Fatalf("accepted %q from %q", id, s)
			}
			seen[id] = true
		}
	})
}
