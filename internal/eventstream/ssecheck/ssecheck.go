// Package ssecheck is a test helper: it parses event-stream bytes with two
// independent spec-conforming parsers (the project's eventstream.Parser and
// github.com/tmaxmax/go-sse) and checks both see exactly the events that
// were sent. Only tests import it.
package ssecheck

import (
	"bytes"
	"testing"

	gosse "github.com/tmaxmax/go-sse"

	"github.com/presenced/presenced/internal/eventstream"
)

// Events parses b with both parsers and fails t unless both saw exactly the
// named events, in order, with the same data. It returns them.
func Events(t testing.TB, b []byte, names []string) []eventstream.Event {
	t.Helper()
	all, err := eventstream.ParseAll(b)
	if err != nil {
		t.Fatal(err)
	}
	var ours []eventstream.Event
	for _, e := range all {
		if !e.IsComment() {
			ours = append(ours, e)
		}
	}
	var theirs []gosse.Event
	for ev, err := range gosse.Read(bytes.NewReader(b), nil) {
		if err != nil {
			t.Fatalf("go-sse: %v", err)
		}
		theirs = append(theirs, ev)
	}
	if len(theirs) != len(names) || len(ours) != len(names) {
		t.Fatalf("go-sse saw %d events, eventstream %d, sent %d", len(theirs), len(ours), len(names))
	}
	for i := range names {
		if theirs[i].Type != names[i] || ours[i].Type != names[i] {
			t.Fatalf("event %d: go-sse %q, eventstream %q, sent %q", i, theirs[i].Type, ours[i].Type, names[i])
		}
		if theirs[i].Data != ours[i].Data {
			t.Fatalf("event %d data: go-sse %q, eventstream %q", i, theirs[i].Data, ours[i].Data)
		}
	}
	return ours
}
