package eventstream_test

import (
	"strings"
	"testing"

	. "github.com/presenced/presenced/internal/eventstream"
	"github.com/presenced/presenced/internal/eventstream/ssecheck"
)

// The WHATWG spec's own examples and line-ending rules.
func TestParserFollowsSpec(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []Event
	}{
		{"lf", "event: a\ndata: x\n\n", []Event{{Type: "a", Data: "x"}}},
		{"crlf", "event: a\r\ndata: x\r\n\r\n", []Event{{Type: "a", Data: "x"}}},
		{"bare cr", "event: a\rdata: x\r\r", []Event{{Type: "a", Data: "x"}}},
		{"multi data", "data: YHOO\ndata: +2\ndata: 10\n\n", []Event{{Type: "message", Data: "YHOO\n+2\n10"}}},
		{"no space", "data:x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"two spaces", "data:  x\n\n", []Event{{Type: "message", Data: " x"}}},
		{"empty data dispatches", "data\n\n", []Event{{Type: "message", Data: ""}}},
		{"no data no dispatch", "event: a\n\n", nil},
		{"unterminated discarded", "data: x\n", nil},
		{"bom", "\uFEFFdata: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"comment", ": hi\n\n", []Event{{Comment: "hi"}}},
		{"id", "id: 7\ndata: x\n\ndata: y\n\n", []Event{{ID: "7", Type: "message", Data: "x"}, {ID: "7", Type: "message", Data: "y"}}},
		{"id with nul ignored", "id: 1\x002\ndata: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"retry", "retry: 1500\ndata: x\n\n", []Event{{Type: "message", Data: "x", Retry: 1500}}},
		{"bad retry", "retry: 15x\ndata: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"unknown field", "foo: bar\ndata: x\n\n", []Event{{Type: "message", Data: "x"}}},
	}
	for _, c := range cases {
		got, err := ParseAll([]byte(c.in))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(got) != len(c.want) {
			t.Fatalf("%s: got %+v, want %+v", c.name, got, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("%s: event %d = %+v, want %+v", c.name, i, got[i], c.want[i])
			}
		}
	}
}

// The finding of issue 8: a display name with bare CRs must stay data.
func TestEncoderKeepsInjectionInData(t *testing.T) {
	evil := "M\revent: presence-victim\rdata: forged\r\rretry: 1\r\nid: 99\n\nevent: x\x00\u2028"
	b, err := AppendEvent(nil, 1, "members", []byte(`<span>`+evil+`</span>`))
	if err != nil {
		t.Fatal(err)
	}
	b = AppendComment(b, "keep\ralive\nevent: y")
	evs := events(t, b)
	if len(evs) != 1 || evs[0].Type != "members" || evs[0].ID != "1" || evs[0].Retry != 0 {
		t.Fatalf("parsed %+v", evs)
	}
	want := "<span>M\nevent: presence-victim\ndata: forged\n\nretry: 1\nid: 99\n\nevent: x\uFFFD\u2028</span>"
	if evs[0].Data != want {
		t.Fatalf("data %q, want %q", evs[0].Data, want)
	}
	ssecheck.Events(t, b, []string{"members"})
}

func TestEventNamesValidated(t *testing.T) {
	for _, name := range []string{"", "a\rb", "a\nb", "a\x00", strings.Repeat("x", MaxEventName+1), "\xff"} {
		if _, err := AppendEvent(nil, 1, name, []byte("x")); err == nil {
			t.Errorf("event name %q accepted", name)
		}
	}
	if _, err := AppendEvent(nil, 0, "presence-user@example.com", nil); err != nil {
		t.Fatal(err)
	}
}

// events parses b with the project's parser, without comments.
func events(t testing.TB, b []byte) []Event {
	t.Helper()
	all, err := ParseAll(b)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for _, e := range all {
		if !e.IsComment() {
			out = append(out, e)
		}
	}
	return out
}

// FuzzEncoder: whatever the data and (valid) name, one event is parsed,
// with that name, by both parsers, and its data is the input with line
// breaks normalised.
func FuzzEncoder(f *testing.F) {
	f.Add("members", []byte("M\revent: presence-victim\rdata: x\r\rretry: 1"))
	f.Add("presence-a", []byte("\r\n\n\r\x00\u2028\xff"))
	f.Add("typing", []byte(""))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		b, err := AppendEvent(nil, 3, name, data)
		if !ValidEventName(name) {
			if err == nil {
				t.Fatalf("invalid name %q accepted", name)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		evs := events(t, b)
		if len(evs) != 1 || evs[0].Type != name {
			t.Fatalf("sent 1 event %q, parsed %+v", name, evs)
		}
		// Line breaks become LF; NUL and each invalid UTF-8 byte U+FFFD
		// (ranging over a string yields one RuneError per invalid byte).
		var w strings.Builder
		for _, r := range strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n") {
			if r == 0 {
				r = '\uFFFD'
			}
			w.WriteRune(r)
		}
		want := w.String()
		if evs[0].Data != want {
			t.Fatalf("data %q, want %q", evs[0].Data, want)
		}
		ssecheck.Events(t, b, []string{name})
	})
}
