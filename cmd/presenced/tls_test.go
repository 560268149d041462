package main

import (
	"crypto/tls"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/tlstest"
)

// procLog collects a child's stderr.
type procLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *procLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *procLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait polls the log for re (generous deadline, no timing asserted).
func (l *procLog) wait(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := rx.FindStringSubmatch(l.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never matched %q:\n%s", re, l.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The real binary serves its --tls-cert and swaps it on SIGHUP; a bad
// pair on SIGHUP keeps the one in service.
func TestSIGHUPReloadsCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	first := tlstest.New(t, "first", "127.0.0.1")
	certFile, keyFile := first.Write(t, dir)
	cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	cmd.Env = append(os.Environ(), "PRESENCE_SECRET=sighup-test-secret-sighup-test-secret", "PRESENCE_DEV=")
	logs := &procLog{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	addr := logs.wait(t, `presenced listening" addr=(\S+) scheme=https`)[1]
	second := tlstest.New(t, "second", "127.0.0.1")
	serving := func() string {
		t.Helper()
		pool := first.Pool()
		pool.AddCert(second.Cert)
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN %q, want h2", p)
		}
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := serving(); cn != "first" {
		t.Fatalf("serving %q", cn)
	}
	second.Write(t, dir)
	_ = cmd.Process.Signal(syscall.SIGHUP)
	logs.wait(t, `SIGHUP: TLS certificate reloaded`)
	if cn := serving(); cn != "second" {
		t.Fatalf("after SIGHUP serving %q", cn)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	logs.wait(t, `SIGHUP: TLS certificate not reloaded, keeping the previous one`)
	if cn := serving(); cn != "second" {
		t.Fatalf("after a bad SIGHUP serving %q, want the previous certificate", cn)
	}
}
