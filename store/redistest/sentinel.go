package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SentinelMaster is the master name the Sentinel helper monitors.
const SentinelMaster = "mymaster"

// Sentinel is a primary, one replica and three redis-sentinel processes
// watching them, all on free loopback ports and owned by one test.
type Sentinel struct {
	Primary, Replica *Server
	Sentinels        []*Server
	// URL is the store's redis+sentinel:// URL for this deployment.
	URL string
}

// StartSentinel launches the deployment and waits until every sentinel
// knows the replica (so that a SENTINEL FAILOVER can pick it at once). The
// timings are short (down-after 400 ms) so that failover tests take seconds.
//
// Without redis-sentinel on PATH the test is skipped, except under CI=true.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	return StartSentinelWith(t)
}

// StartSentinelWith is StartSentinel with extra redis-server arguments for
// the primary and the replica (the soak's "--enable-debug-command local"
// for DEBUG SLEEP).
func StartSentinelWith(t testing.TB, extra ...string) *Sentinel {
	t.Helper()
	return StartSentinelArgs(t, extra, extra)
}

// StartSentinelArgs is StartSentinel with extra redis-server arguments for
// the primary and for the replica, apart: for example a primary that the
// sentinels cannot demote after a failover (REPLICAOF renamed away), like
// an old primary on the far side of a partition.
func StartSentinelArgs(t testing.TB, primaryExtra, replicaExtra []string) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-sentinel not on PATH (required under CI=true): %v", err)
		}
		t.Skip("redis-sentinel not on PATH; install it (apt-get install redis-sentinel) to run the Sentinel tests")
	}
	// No delay before a diskless full sync (the default waits 5 s for more
	// replicas), on both: after a failover the old primary syncs from the
	// new one.
	nodelay := []string{"--repl-diskless-sync-delay", "0"}
	primary := StartWith(t, append(append([]string{}, nodelay...), primaryExtra...)...)
	_, port, _ := strings.Cut(primary.Addr, ":")
	replica := StartWith(t, append(append(append([]string{}, nodelay...), replicaExtra...), "--replicaof", "127.0.0.1", port)...)
	d := &Sentinel{Primary: primary, Replica: replica}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(replica.DoAll(t, "ROLE"), ":connected:") {
		if time.Now().After(deadline) {
			t.Fatalf("replica not in sync: %s", replica.DoAll(t, "ROLE"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var addrs []string
	for i := range 3 {
		sn := startSentinel(t, bin, primary.Addr, i)
		d.Sentinels = append(d.Sentinels, sn)
		addrs = append(addrs, sn.Addr)
	}
	d.URL = "redis+sentinel://" + strings.Join(addrs, ",") + "/" + SentinelMaster + "/0"
	// A forced failover needs a replica the sentinel has seen in sync, and a
	// real one needs sentinels that know each other (hello messages, every
	// 2 s): wait for both.
	for _, sn := range d.Sentinels {
		for {
			replicas := sn.Do(t, "SENTINEL", "REPLICAS", SentinelMaster)
			others := sn.Do(t, "SENTINEL", "SENTINELS", SentinelMaster)
			if replicas == "*1" && others == "*2" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sentinel %s: replicas %q, other sentinels %q; want *1 and *2", sn.Addr, replicas, others)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return d
}

func startSentinel(t testing.TB, bin, primaryAddr string, n int) *Server {
	t.Helper()
	dir := t.TempDir()
	host, port, _ := strings.Cut(primaryAddr, ":")
	for attempt := 0; attempt < 5; attempt++ {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		// Sentinel rewrites its config file, so each gets its own.
		conf := filepath.Join(dir, fmt.Sprintf("sentinel%d.conf", n))
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s %s %s 2\n"+
			"sentinel down-after-milliseconds %s 400\n"+
			"sentinel failover-timeout %s 3000\n"+
			"sentinel parallel-syncs %s 1\n",
			p, dir, filepath.Join(dir, "sentinel.log"), SentinelMaster, host, port,
			SentinelMaster, SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, conf)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-sentinel: %v", err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		if waitReady(addr, 5*time.Second) {
			s := &Server{Addr: addr, dir: dir, bin: bin, args: []string{conf}, cmd: cmd}
			t.Cleanup(s.stop)
			return s
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
	t.Fatalf("redis-sentinel did not become ready; log:\n%s", log)
	return nil
}

// MasterAddr asks the first sentinel which server is the primary now.
func (d *Sentinel) MasterAddr(t testing.TB) string {
	t.Helper()
	return d.Sentinels[0].DoAll(t, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster)
}

// Kill stops the server at once (SIGKILL), as a crashed host would.
func (s *Server) Kill() { s.stop() }

// DoAll sends one command and returns its whole reply flattened to strings
// joined by ":" (so GET-MASTER-ADDR-BY-NAME reads "host:port").
func (s *Server) DoAll(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Command(s.Addr, args...)
	var refused ReplyError
	if err != nil && !errors.As(err, &refused) {
		t.Fatalf("redis %s on %s: %v", args[0], s.Addr, err)
	}
	return out // an error reply reads as its text
}

// ReplyError is an error reply of the server (Command).
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// Command sends one command to addr and returns its reply as DoAll does,
// or the error (an error reply, or the server unreachable) without failing
// anything: for callers, such as a soak's fault loop, that expect servers
// to be down at times.
func Command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	var out []string
	err = readReply(bufio.NewReader(c), &out)
	return strings.Join(out, ":"), err
}

func readReply(r *bufio.Reader, out *[]string) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '-':
		*out = append(*out, line[1:])
		return ReplyError(line[1:])
	case '*':
		n, _ := strconv.Atoi(line[1:])
		for range n {
			if err := readReply(r, out); err != nil {
				return err
			}
		}
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		*out = append(*out, string(buf[:n]))
	default:
		*out = append(*out, line[1:])
	}
	return nil
}
