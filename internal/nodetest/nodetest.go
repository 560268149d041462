// Package nodetest runs presenced gateway nodes as real child processes for
// fault tests: it builds cmd/presenced once per test binary, starts nodes on
// free loopback ports against one redis-server (store/redistest), and can
// SIGKILL, SIGSTOP/SIGCONT and restart them. A kill or a freeze is the point
// of these tests, so an in-process gateway would not do: only a real process
// loses its memory, its timers and its TCP connections the way a crash does.
package nodetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presenced/presenced/store/redistest"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary builds cmd/presenced once per test binary (into a temporary
// directory removed by Cleanup) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nodetest-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "presenced")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/presenced")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/presenced: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if buildBin != "" {
		_ = os.RemoveAll(filepath.Dir(buildBin))
	}
}

// Secret returns a fresh random 32-byte secret, hex-encoded (64 characters).
func Secret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Token mints an HS256 token for a user, valid for a day, signed with
// secret the way any issuer of the contract would (golang-jwt, sub + name +
// exp), not through the gateway's own code.
func Token(t testing.TB, secret, userID, name string) string {
	t.Helper()
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": userID, "name": name, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	return tok
}

// Options are a node's settings; the zero value gets the short fault-test
// timings (ttl 3 s, heartbeat 1 s, leave-grace 1 s).
type Options struct {
	RedisURL   string
	Secret     string
	TTL        time.Duration
	Heartbeat  time.Duration
	LeaveGrace time.Duration
	Extra      []string // more flags
}

// Node is one running (or killed) gateway process.
type Node struct {
	Name string
	Base string // http://127.0.0.1:port
	addr string
	bin  string
	args []string
	t    testing.TB

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	frozen bool
}

// Start runs a node on a free port and waits until /readyz answers 200.
// The node is killed when the test ends.
func Start(t testing.TB, name string, o Options) *Node {
	t.Helper()
	if o.TTL == 0 {
		o.TTL = 3 * time.Second
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = time.Second
	}
	if o.LeaveGrace == 0 {
		o.LeaveGrace = time.Second
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Name: name, addr: fmt.Sprintf("127.0.0.1:%d", port), bin: Binary(t), t: t}
	n.Base = "http://" + n.addr
	n.args = []string{
		"--addr", n.addr, "--secret", o.Secret,
		"--ttl", o.TTL.String(), "--heartbeat", o.Heartbeat.String(), "--leave-grace", o.LeaveGrace.String(),
		"--rate-limit=false",
	}
	if o.RedisURL != "" {
		n.args = append(n.args, "--redis-url", o.RedisURL)
	}
	n.args = append(n.args, o.Extra...)
	n.start()
	t.Cleanup(func() {
		n.mu.Lock()
		if n.frozen {
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
		}
		n.mu.Unlock()
		n.Kill()
	})
	return n
}

func (n *Node) start() {
	n.t.Helper()
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(n.bin, n.args...)
		cmd.Env = append(os.Environ(), "PRESENCE_DEV=", "PRESENCE_SECRET=")
		log := &bytes.Buffer{}
		cmd.Stdout = &lockedWriter{w: log}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			n.t.Fatalf("start %s: %v", n.Name, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		n.mu.Lock()
		n.cmd, n.exited, n.log, n.frozen = cmd, exited, log, false
		n.mu.Unlock()
		if n.waitReady(15 * time.Second) {
			return
		}
		_ = cmd.Process.Kill()
		<-exited
		// On a restart the port may still be held briefly; try again.
		if attempt >= 5 {
			n.t.Fatalf("node %s did not become ready; log:\n%s", n.Name, n.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (n *Node) waitReady(within time.Duration) bool {
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return false
		default:
		}
		res, err := c.Get(n.Base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// Log is what the node wrote so far (its current process).
func (n *Node) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w, ok := n.cmd.Stdout.(*lockedWriter); ok {
		return w.String()
	}
	return ""
}

// Kill sends SIGKILL and waits for the process to go: no shutdown, no
// goodbye, every timer and in-memory state lost.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.frozen = false
	n.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Stop freezes the node (SIGSTOP): its sockets stay open, nothing runs.
func (n *Node) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = n.cmd.Process.Signal(syscall.SIGSTOP)
	n.frozen = true
}

// Cont resumes a frozen node (SIGCONT).
func (n *Node) Cont() {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = n.cmd.Process.Signal(syscall.SIGCONT)
	n.frozen = false
}

// Restart kills the node and starts a new process on the same address.
func (n *Node) Restart() {
	n.t.Helper()
	n.Kill()
	n.start()
}

// Alive reports whether the current process is still running.
func (n *Node) Alive() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Metric reads one unlabelled counter or gauge from the node's /metrics
// (-1 when absent or unreachable).
func (n *Node) Metric(name string) float64 {
	c := &http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(n.Base + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// Do sends one API request with a bearer token and a JSON body ("" for
// none) and returns the status code and body.
func Do(ctx context.Context, c *http.Client, method, url, token, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Bound the log: a soak runs for minutes (8 MiB holds a 10-minute
	// soak's node log, which the soak writes to bin/soak/ for analysis).
	if l.w.Len() > 8<<20 {
		l.w.Reset()
	}
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
