package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var built struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// buildBinary builds the real binary once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "presenced-bin-")
		if built.err == nil {
			built.out, built.err = exec.Command("go", "build", "-o", filepath.Join(built.dir, "presenced"), ".").CombinedOutput()
		}
	})
	if built.err != nil {
		t.Fatalf("build: %v\n%s", built.err, built.out)
	}
	return filepath.Join(built.dir, "presenced")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// --version prints the version and exits 0 without a secret; the real
// binary carries the VCS revision it was built from.
func TestVersion(t *testing.T) {
	t.Setenv("PRESENCE_SECRET", "")
	var out bytes.Buffer
	stdout = &out
	t.Cleanup(func() { stdout = os.Stdout })
	if code := run([]string{"--version"}); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if !strings.HasPrefix(out.String(), "presenced ") {
		t.Fatalf("printed %q", out.String())
	}
	if testing.Short() {
		return
	}
	bin := buildBinary(t)
	got, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("presenced --version: %v", err)
	}
	// Whatever revision the toolchain stamped (none with -buildvcs=false
	// or in a git worktree) is what --version prints.
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`vcs\.revision=(\S+)`).FindSubmatch(info); m != nil && !strings.Contains(string(got), "revision "+string(m[1])) {
		t.Fatalf("--version printed %q, want revision %s", got, m[1])
	}
}

func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	if got, want := formatVersion(bi, ""), "presenced v1.2.3 revision abc123+dirty (2026-12-01T10:00:00Z) go1.26.8"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// Without VCS stamping, the link-time revision (container builds).
	bi = &debug.BuildInfo{GoVersion: "go1.26.8"}
	if got, want := formatVersion(bi, "def456"), "presenced (devel) revision def456 go1.26.8"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A short secret is refused at start with a clear message.
func TestRefusesShortSecret(t *testing.T) {
	t.Setenv("PRESENCE_SECRET", "too-short")
	t.Setenv("PRESENCE_DEV", "")
	if code := run([]string{"--addr", "127.0.0.1:0"}); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
}

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
	bin := buildBinary(t)
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
