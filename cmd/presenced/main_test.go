package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The binary refuses to start without --secret (and without --dev).
func TestRefusesWithoutSecret(t *testing.T) {
	t.Setenv("PRESENCE_SECRET", "")
	t.Setenv("PRESENCE_DEV", "")
	if code := run([]string{"--addr", "127.0.0.1:0"}); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
}

// The real binary starts in dev mode, serves, and stops cleanly on SIGTERM.
func TestSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := t.TempDir() + "/presenced"
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--dev", "--addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "PRESENCE_SECRET=")
	var stderr bytes.Buffer
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(&stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		var seen strings.Builder
		closed := false
		for {
			n, err := pr.Read(buf)
			seen.Write(buf[:n])
			if !closed && strings.Contains(seen.String(), "presenced listening") {
				close(started)
				closed = true
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("did not start:\n%s", stderr.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("did not stop on SIGTERM")
	}
	out := stderr.String()
	for _, want := range []string{"DEV MODE", "stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
