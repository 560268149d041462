package tlsreload

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/tlstest"
)

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func cn(r *Reloader) string { return r.Certificate().Leaf.Subject.CommonName }

func TestReloadKeepsOldOnBadPair(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := tlstest.New(t, "first", "127.0.0.1").Write(t, dir)
	r, err := New(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.GetCertificate(nil); got.Leaf.Subject.CommonName != "first" {
		t.Fatalf("serving %q", got.Leaf.Subject.CommonName)
	}

	// A new pair is picked up on Reload (SIGHUP).
	tlstest.New(t, "second", "127.0.0.1").Write(t, dir)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn(r) != "second" {
		t.Fatalf("after reload serving %q", cn(r))
	}

	// A key that does not match the certificate: refused, old one kept.
	third := tlstest.New(t, "third", "127.0.0.1")
	other := tlstest.New(t, "other", "127.0.0.1")
	if err := os.WriteFile(certFile, third.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("a mismatched key was accepted")
	}
	if cn(r) != "second" {
		t.Fatalf("after a bad reload serving %q, want the previous one", cn(r))
	}
	// Garbage and a missing file: the same.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil || cn(r) != "second" {
		t.Fatalf("garbage: err %v, serving %q", err, cn(r))
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil || cn(r) != "second" {
		t.Fatalf("missing key: err %v, serving %q", err, cn(r))
	}
	if _, err := New(certFile, keyFile, nil); err == nil {
		t.Fatal("New accepted a missing key")
	}
}

func TestWatchFollowsFileChanges(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := tlstest.New(t, "first", "127.0.0.1").Write(t, dir)
	logs := &logBuf{}
	r, err := New(certFile, keyFile, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Watch(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; serving %q; log:\n%s", what, cn(r), logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	tlstest.New(t, "second", "127.0.0.1").Write(t, dir)
	waitFor("the new certificate", func() bool { return cn(r) == "second" })
	waitFor("the reload log line", func() bool { return strings.Contains(logs.String(), "TLS certificate reloaded") })

	// A half-done update (new certificate, old key) is logged, once, and
	// the previous certificate stays in service...
	third := tlstest.New(t, "third", "127.0.0.1")
	if err := os.WriteFile(certFile, third.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the error log line", func() bool { return strings.Contains(logs.String(), "does not load") })
	if cn(r) != "second" {
		t.Fatalf("serving %q during a half-done update", cn(r))
	}
	// ...until the key arrives too.
	if err := os.WriteFile(keyFile, third.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the completed update", func() bool { return cn(r) == "third" })
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Fatalf("the bad pair was logged %d times, want once:\n%s", n, logs.String())
	}
}
