package views

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"testing"

	presenced "github.com/presenced/presenced"
)

// The assets the components link to are embedded, and the vendored htmx files
// are the pinned ones (htmx.org 2.0.11 + htmx-ext-sse 2.2.4, never htmx.org's
// old dist/ext/sse.js; htmx.org 4.0.1 with its own hx-sse extension), byte for
// byte as in static/vendor/SHA256SUMS.
func TestStaticAssets(t *testing.T) {
	for _, p := range []string{
		"static/presence.js", "static/presence.css", "static/favicon.svg",
		"static/vendor/htmx.min.js", "static/vendor/htmx-ext-sse.js",
		"static/vendor/LICENSE.htmx.org", "static/vendor/LICENSE.htmx-ext-sse",
		"static/vendor/htmx4.min.js", "static/vendor/htmx4-ext-sse.min.js", "static/vendor/LICENSE.htmx.org-4",
		"static/presence-htmx4.js",
	} {
		b, err := fs.ReadFile(presenced.Static, p)
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v (%d bytes)", p, err, len(b))
		}
	}

	sums, err := fs.ReadFile(presenced.Static, "static/vendor/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Fatalf("bad SHA256SUMS line %q", sc.Text())
		}
		b, err := fs.ReadFile(presenced.Static, "static/vendor/"+strings.TrimPrefix(f[1], "*"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != f[0] {
			t.Errorf("%s: sha256 mismatch (run `make vendor`)", f[1])
		}
		n++
	}
	if n != 7 {
		t.Errorf("SHA256SUMS lists %d files, want 7", n)
	}

	htmx, _ := fs.ReadFile(presenced.Static, "static/vendor/htmx.min.js")
	if !bytes.Contains(htmx, []byte(`version:"2.0.11"`)) || !bytes.Contains(htmx, []byte("defineExtension")) {
		t.Error("htmx.min.js is not htmx.org 2.0.11")
	}
	htmx4, _ := fs.ReadFile(presenced.Static, "static/vendor/htmx4.min.js")
	if !bytes.Contains(htmx4, []byte(`"4.0.1"`)) || !bytes.Contains(htmx4, []byte("registerExtension")) {
		t.Error("htmx4.min.js is not htmx.org 4.0.1")
	}
	sse4, _ := fs.ReadFile(presenced.Static, "static/vendor/htmx4-ext-sse.min.js")
	if !bytes.Contains(sse4, []byte("hx-sse")) || !bytes.Contains(sse4, []byte("registerExtension")) {
		t.Error("htmx4-ext-sse.min.js is not htmx 4's hx-sse extension")
	}
	// The browser tests' axe-core is never served.
	if _, err := fs.Stat(presenced.Static, "static/vendor/axe.min.js"); err == nil {
		t.Error("axe-core is embedded in static/: it is for the tests only (e2e/testdata)")
	}
	sse, _ := fs.ReadFile(presenced.Static, "static/vendor/htmx-ext-sse.js")
	if !bytes.Contains(sse, []byte("htmx.defineExtension('sse'")) || !bytes.Contains(sse, []byte("htmx:sseBeforeMessage")) {
		t.Error("htmx-ext-sse.js is not the htmx 2 SSE extension")
	}

	js, _ := fs.ReadFile(presenced.Static, "static/presence.js")
	for _, want := range []string{
		"/api/presence", "sendBeacon", "visibilitychange", "pagehide", "presence.sid",
		"data-presence-typing", "data-presence-set-status", "htmx:sseBeforeMessage", "window.Presence",
	} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("presence.js lacks %q", want)
		}
	}
	css, _ := fs.ReadFile(presenced.Static, "static/presence.css")
	for _, want := range []string{"#22c55e", "#f59e0b", "#ef4444", "#9ca3af", "prefers-color-scheme: dark", "prefers-reduced-motion"} {
		if !bytes.Contains(css, []byte(want)) {
			t.Errorf("presence.css lacks %q", want)
		}
	}
}

// Every --pr-* custom property of presence.css is documented in the README's
// theming table (host pages theme the widget through them).
func TestThemeVariablesDocumented(t *testing.T) {
	css, err := fs.ReadFile(presenced.Static, "static/presence.css")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`--pr-[a-z0-9]+(?:-[a-z0-9]+)*`).FindAllString(string(css), -1)
	if len(vars) < 20 {
		t.Fatalf("found only %d --pr-* uses in presence.css", len(vars))
	}
	seen := map[string]bool{}
	for _, v := range vars {
		if seen[v] {
			continue
		}
		seen[v] = true
		if !bytes.Contains(readme, []byte("| `"+v+"` |")) {
			t.Errorf("%s is not in the README's theming table", v)
		}
	}
}
