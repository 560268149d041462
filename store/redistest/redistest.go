// Package redistest starts a real redis-server for tests: on a free loopback
// port, in a temporary directory, with keyspace expiry notifications off so
// that the store under test has to enable them itself.
//
// Without redis-server on PATH the test is skipped, except under CI=true,
// where a missing server is a failure: CI must never pass by skipping the
// Redis backend.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Server is a running redis-server owned by one test.
type Server struct {
	Addr string // host:port
	URL  string // redis://host:port/0
	dir  string
	bin  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	dead bool // stopped (Kill, or the test's end) and not restarted
}

var prefixSeq atomic.Int64

// Start launches redis-server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t)
}

// StartWith is Start with extra redis-server arguments, for example
// "--rename-command", "CONFIG", "" to play a managed Redis that refuses
// CONFIG SET.
func StartWith(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not on PATH (required under CI=true): %v", err)
		}
		t.Skip("redis-server not on PATH; install it (apt-get install redis-server) to run the Redis tests")
	}
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{
			"--port", fmt.Sprint(port), "--bind", "127.0.0.1",
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--notify-keyspace-events", "",
			"--logfile", filepath.Join(dir, "redis.log"),
		}
		args = append(args, extra...)
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if waitReady(addr, 5*time.Second) {
			s := &Server{Addr: addr, URL: "redis://" + addr + "/0", dir: dir, bin: bin, args: args, cmd: cmd}
			t.Cleanup(s.stop)
			return s
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	t.Fatalf("redis-server did not become ready; log:\n%s", log)
	return nil
}

// Prefix returns a key prefix unique within this test binary, so that tests
// sharing one server never see each other's keys.
func Prefix(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("t%d:%s:", prefixSeq.Add(1), name)
}

// Do sends one command in Redis's inline protocol and returns the first
// reply line, for tests that poke the server behind the store's back (for
// example CLIENT KILL TYPE pubsub).
func (s *Server) Do(t testing.TB, args ...string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial redis: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatalf("write redis: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read redis: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// Restart stops the server with SHUTDOWN NOSAVE (so its whole data set,
// script cache and CONFIG SET changes are lost, as in a crash without
// persistence) and starts a fresh one on the same port with the same
// arguments. Clients see their connections drop and must reconnect.
// A server stopped by Kill is just started again. A cluster node keeps its
// nodes.conf, so it rejoins with its node ID and its last saved view of
// the cluster (see Cluster.KillPrimaryOf for what a killed primary comes
// back as).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dead {
		c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial redis: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n"))
		_, _ = bufio.NewReader(c).ReadString('\n') // the server closes the connection: no reply
		c.Close()
		exited := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-exited
		}
		s.dead = true
	}
	// The port was just ours; retry briefly in case it is not free yet.
	for attempt := 0; attempt < 20; attempt++ {
		cmd := exec.Command(s.bin, s.args...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("restart redis-server: %v", err)
		}
		if waitReady(s.Addr, 5*time.Second) {
			s.cmd = cmd
			s.dead = false
			return
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	t.Fatalf("redis-server did not come back on %s; log:\n%s", s.Addr, log)
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.dead = true
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// alive reports whether the server was started and not stopped since.
func (s *Server) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago
// (test helpers that start servers of their own use it too).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitReady(addr string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
