package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/a-h/templ"
	"golang.org/x/net/html"

	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/views"
)

// fuzzSecret and fuzzNow are fixed so that the seed tokens under
// testdata/fuzz/FuzzVerifyToken stay valid: they expire in 2100.
var (
	fuzzSecret = []byte("fuzz-secret-fuzz-secret-fuzz-secret!")
	fuzzNow    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func fuzzAuth() *Auth {
	a := NewAuth(fuzzSecret)
	a.now = func() time.Time { return fuzzNow }
	return a
}

// canonicalSigned reports whether raw is exactly a token this secret
// signed: three segments, each the canonical base64url (no padding, no
// stray characters, no trailing bits) of its bytes, the third the
// HMAC-SHA256 of the first two as they stand.
func canonicalSigned(raw string) bool {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return false
	}
	enc := base64.RawURLEncoding.Strict()
	var dec [3][]byte
	for i, p := range parts {
		b, err := enc.DecodeString(p)
		if err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
			return false
		}
		dec[i] = b
	}
	m := hmac.New(sha256.New, fuzzSecret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	var hdr struct {
		Alg string `json:"alg"`
	}
	return hmac.Equal(m.Sum(nil), dec[2]) && json.Unmarshal(dec[0], &hdr) == nil && hdr.Alg == "HS256"
}

// FuzzVerifyToken: Verify never panics, and never accepts a token that is
// not byte for byte a correctly signed canonical one (re-spelled
// signatures, line breaks, flipped trailing bits, other algorithms); what
// it accepts satisfies the claim limits, and a second Verify (the cache)
// agrees with the first.
func FuzzVerifyToken(f *testing.F) {
	a := fuzzAuth()
	exp := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Sub(fuzzNow)
	for _, p := range []store.Profile{{ID: "alice", Name: "Alice"}, {ID: "bob", Name: "<b>\"'&", Avatar: "https://img.example/b.png"}} {
		tok, err := a.Mint(p, exp, []string{"lobby"})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
		for _, v := range respellings(tok, 12) {
			f.Add(v)
		}
	}
	see, _ := a.MintSee(store.Profile{ID: "carol"}, exp, nil, &See{Users: []string{"a"}, Rooms: []string{"r"}})
	f.Add(see)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := a.Verify(raw)
		if err != nil {
			return
		}
		if !canonicalSigned(raw) {
			t.Fatalf("accepted a token that is not canonical and signed: %q", raw)
		}
		if id.Token != raw || !store.ValidUserID(id.User.ID) || checkProfile(id.User.Name, id.User.Avatar) != nil || id.See.check() != nil {
			t.Fatalf("accepted identity breaks the limits: %+v", id)
		}
		id2, err := a.Verify(raw)
		if err != nil || id2.User != id.User || id2.Token != raw {
			t.Fatalf("second Verify disagrees: %+v, %v", id2, err)
		}
	})
}

// fragmentShape is a rendering's structure: the sequence of tags and
// attribute names, which user text must never change.
func fragmentShape(t *testing.T, b []byte) []string {
	z := html.NewTokenizer(strings.NewReader(string(b)))
	var out []string
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return out
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			s := tt.String() + ":" + string(name)
			for hasAttr {
				var k []byte
				k, _, hasAttr = z.TagAttr()
				s += " " + string(k)
			}
			out = append(out, s)
		case html.CommentToken, html.DoctypeToken:
			out = append(out, tt.String())
		}
	}
}

// attrValues collects the decoded values of one attribute, and every img
// src.
func attrValues(b []byte, key string) (vals, srcs []string) {
	z := html.NewTokenizer(strings.NewReader(string(b)))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		name, hasAttr := z.TagName()
		for hasAttr {
			var k, v []byte
			k, v, hasAttr = z.TagAttr()
			if string(k) == key {
				vals = append(vals, string(v))
			}
			if string(name) == "img" && string(k) == "src" {
				srcs = append(srcs, string(v))
			}
		}
	}
}

// renderings renders every fragment that shows a profile.
func renderings(t *testing.T, p store.Profile, st store.Status) map[string][]byte {
	ms := []store.Member{{Profile: p, Status: st}}
	out := map[string][]byte{}
	for name, c := range map[string]templ.Component{
		"dot":        views.Dot(views.DotProps{UserID: p.ID, Name: p.DisplayName(), Status: st, Label: true}),
		"avatar":     views.Avatar(views.AvatarProps{User: p, Status: st}),
		"members":    views.Members(views.MembersProps{RoomID: p.ID, Members: ms, Max: 5}),
		"memberlist": views.MemberList(views.MemberListProps{RoomID: p.ID, Members: ms}),
		"typing":     views.TypingLine(views.TypingProps{RoomID: p.ID, Typists: []store.Typist{{ID: p.ID, Name: p.Name}}}),
	} {
		b, err := renderHTML(context.Background(), c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = b
	}
	return out
}

// FuzzFragmentRenderers: the fragments with a hostile profile (any id,
// name and avatar: <>"'&, CR, LF, NUL, U+2028, very long) have the same
// structure as with a benign one, carry the id and name back exactly when
// decoded, never contain a raw CR or NUL, and never get an image URL that
// is not http(s) or a path.
func FuzzFragmentRenderers(f *testing.F) {
	for _, s := range [][3]string{
		{"alice", "Alice", "https://img.example/a.png"},
		{`"><script>alert(1)</script>`, `<img src=x onerror=alert(1)>`, `javascript:alert(1)`},
		{"a'b", "Eve\revent: members\r\ndata: <b>x</b>\r\r", `https://x.example/"onerror="alert(1)`},
		{"x&amp;", "\x00nul\x00", "/\\evil.example/a.png"},
		{"u", "line\u2028sep\u2029para", "//evil.example/a.png"},
		{"v", strings.Repeat("<&>\"'", 400), "HTTPS://IMG.EXAMPLE/A.PNG"},
		{"w", "   ", "data:image/svg+xml,<svg onload=alert(1)>"},
		{"-", "\t\n\v\f", "/ok.png?x=\"'<>"},
	} {
		f.Add(s[0], s[1], s[2], byte(0))
	}
	statuses := []store.Status{store.StatusOnline, store.StatusAway, store.StatusBusy, store.StatusOffline}
	f.Fuzz(func(t *testing.T, id, name, avatar string, stb byte) {
		if id == "" || !utf8.ValidString(id) || !utf8.ValidString(name) || !utf8.ValidString(avatar) {
			return // ids are never empty; claims come from JSON, always valid UTF-8
		}
		st := statuses[int(stb)%len(statuses)]
		hostile := renderings(t, store.Profile{ID: id, Name: name, Avatar: avatar}, st)

		// The benign twin takes the same template branches.
		bName := ""
		switch {
		case name == "":
		case name == id:
			bName = "x"
		case strings.TrimSpace(name) == "":
			bName = " "
		default:
			bName = "n"
		}
		bAvatar := ""
		if _, srcs := attrValues(hostile["avatar"], "data-presence-user"); len(srcs) > 0 {
			bAvatar = "https://img.example/x.png" // the image branch; its src is checked below
		}
		benign := renderings(t, store.Profile{ID: "x", Name: bName, Avatar: bAvatar}, st)

		fix := func(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }
		for kind, b := range hostile {
			if strings.ContainsRune(string(b), '\r') || strings.ContainsRune(string(b), 0) {
				t.Fatalf("%s: raw CR or NUL in %q", kind, b)
			}
			if got, want := fragmentShape(t, b), fragmentShape(t, benign[kind]); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("%s: user text changed the markup\n got %q\nwant %q\nhtml %s", kind, got, want, b)
			}
			users, srcs := attrValues(b, "data-presence-user")
			for _, u := range users {
				if u != fix(id) {
					t.Fatalf("%s: data-presence-user %q, want %q", kind, u, id)
				}
			}
			for _, s := range srcs {
				l := strings.ToLower(s)
				if !strings.HasPrefix(l, "https://") && !strings.HasPrefix(l, "http://") && !strings.HasPrefix(s, "/") {
					t.Fatalf("%s: img src %q", kind, s)
				}
			}
		}
		labels, _ := attrValues(hostile["dot"], "aria-label")
		want := fix(id)
		if strings.TrimSpace(name) != "" {
			want = fix(name)
		}
		if len(labels) != 1 || labels[0] != want+" is "+string(st) {
			t.Fatalf("dot label %q, want %q", labels, want+" is "+string(st))
		}
	})
}
