//go:build soak

package nodetest

// The soak's Sentinel backend (SOAK_BACKEND=sentinel): the three nodes use
// --redis-url redis+sentinel://… to a primary, one replica and three
// redis-sentinel processes (redistest.StartSentinelWith). Its faults add
// failovers to the node faults: the current primary killed with SIGKILL
// (the sentinels promote the replica; the old one comes back on its port
// empty, as a primary, and the sentinels turn it into the new primary's
// replica, as a rebooted host would), a planned SENTINEL FAILOVER, and the
// single backend's Redis faults aimed at whichever server is the primary
// at the time. With asynchronous replication a failover may lose the last
// writes: the oracle opens a loss window over them (openLoss).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

const (
	// lossMargin: writes answered this long before a failover began may
	// not have reached the replica. On loopback the replica lags by far
	// less; a second also covers a box at load 20.
	lossMargin = time.Second
	// switchMargin: after the sentinels report the new primary, every node
	// is on it within this (go-redis's failover client drops its
	// connections to the old one on +switch-master; each node checks the
	// server's run_id every second, README "Sentinel"). Writes answered
	// before may have gone to the old primary.
	switchMargin = 2 * time.Second
)

type sentinelSoak struct {
	t     *testing.T
	d     *redistest.Sentinel
	bin   string
	extra []string
	addrs [2]string         // the two data servers' addresses, fixed
	kill  map[string]func() // by address: SIGKILL the process serving it now
	// restartPrimary (SOAK_SENTINEL_RESTART=primary): a killed primary is
	// restarted at once, empty, as a primary, instead of later as the new
	// primary's replica.
	restartPrimary bool
}

func sentinelBackend(t *testing.T) *soakBackend {
	extra := []string{"--enable-debug-command", "local"}
	d := redistest.StartSentinelWith(t, extra...)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	ss := &sentinelSoak{t: t, d: d, bin: bin, extra: extra, addrs: [2]string{d.Primary.Addr, d.Replica.Addr},
		kill:           map[string]func(){d.Primary.Addr: d.Primary.Kill, d.Replica.Addr: d.Replica.Kill},
		restartPrimary: os.Getenv("SOAK_SENTINEL_RESTART") == "primary"}
	desc := "Sentinel (a primary, a replica, 3 sentinels, down-after 400 ms)"
	if ss.restartPrimary {
		desc += ", a killed primary restarted at once, empty, as a primary (SOAK_SENTINEL_RESTART=primary)"
	}
	return &soakBackend{
		desc: desc, url: d.URL,
		kinds: []string{"primary-kill9", "client-kill-pubsub", "sentinel-failover", "redis-shutdown-nosave", "debug-sleep-1"},
		apply: ss.apply,
	}
}

func (ss *sentinelSoak) master() string { return ss.d.MasterAddr(ss.t) }

func (ss *sentinelSoak) other(addr string) string {
	if addr == ss.addrs[0] {
		return ss.addrs[1]
	}
	return ss.addrs[0]
}

// waitSwitch polls the sentinels until they name a primary other than
// before, for up to within: the new one and when it was first seen.
func (ss *sentinelSoak) waitSwitch(before string, within time.Duration) (string, time.Time, bool) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := ss.master(); m != before {
			return m, time.Now(), true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return before, time.Time{}, false
}

// waitAgree waits (up to 10 s) until every sentinel names m as the
// primary: a sentinel that did not lead the failover learns it from the
// others' hello messages, up to a couple of seconds later.
func (ss *sentinelSoak) waitAgree(m string) time.Time {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, sn := range ss.d.Sentinels {
			if a, err := respDo(sn.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", redistest.SentinelMaster); err != nil || a != m {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Now()
}

// stable waits until the deployment has settled and returns its primary
// and when: every sentinel names the same primary, that server says it is
// one, and the other server is its replica with the link up, listed by
// every sentinel as a healthy replica (so that a failover can pick it).
// After a failover the old primary is turned into a replica by the
// sentinels themselves, 10–20 s later on this box.
func (ss *sentinelSoak) stable() (string, time.Time) {
	ss.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		m, why := ss.settled()
		if why == "" {
			return m, time.Now()
		}
		if time.Now().After(deadline) {
			ss.t.Fatalf("the Sentinel deployment did not settle within 90 s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settled: "" and the primary when the deployment is settled (see
// stable), else what is not.
func (ss *sentinelSoak) settled() (string, string) {
	var m string
	for _, sn := range ss.d.Sentinels {
		a, err := respDo(sn.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", redistest.SentinelMaster)
		if err != nil || (m != "" && a != m) {
			return "", fmt.Sprintf("sentinels disagree on the primary (%q, %q, %v)", m, a, err)
		}
		m = a
	}
	if role, err := respDo(m, "ROLE"); err != nil || !strings.HasPrefix(role, "master:") {
		return "", fmt.Sprintf("the sentinels' primary %s says ROLE %q (%v)", m, role, err)
	}
	addr := ss.other(m)
	host, port, _ := strings.Cut(m, ":")
	_, rport, _ := strings.Cut(addr, ":")
	if role, err := respDo(addr, "ROLE"); err != nil || !strings.HasPrefix(role, "slave:"+host+":"+port+":connected") {
		return "", fmt.Sprintf("%s is not a connected replica of %s: ROLE %q (%v)", addr, m, role, err)
	}
	for _, sn := range ss.d.Sentinels {
		r, err := respDo(sn.Addr, "SENTINEL", "REPLICAS", redistest.SentinelMaster)
		if err != nil || !strings.Contains(r, ":port:"+rport+":") || !strings.Contains(r, ":flags:slave:") ||
			strings.Contains(r, "s_down") || strings.Contains(r, "disconnected") || !strings.Contains(r, "master-link-status:ok") {
			return "", fmt.Sprintf("sentinel %s does not list %s as a healthy replica: %q (%v)", sn.Addr, addr, r, err)
		}
	}
	return m, ""
}

// restartAt starts a fresh redis-server on addr (empty: no persistence):
// as replicaOf's replica, or as a primary if replicaOf is "" (a crashed
// host rebooting with its old config).
func (ss *sentinelSoak) restartAt(addr, replicaOf string) {
	ss.t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	dir := ss.t.TempDir()
	args := append([]string{
		"--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no",
		"--notify-keyspace-events", "", "--logfile", filepath.Join(dir, "redis.log"),
		"--repl-diskless-sync-delay", "0",
	}, ss.extra...)
	if replicaOf != "" {
		host, port, _ := strings.Cut(replicaOf, ":")
		args = append(args, "--replicaof", host, port)
	}
	for attempt := 0; attempt < 50; attempt++ {
		cmd := exec.Command(ss.bin, args...)
		if err := cmd.Start(); err != nil {
			ss.t.Fatalf("start redis-server: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		kill := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if r, err := respDo(addr, "PING"); err == nil && r == "PONG" {
				ss.kill[addr] = kill
				ss.t.Cleanup(kill)
				return
			}
			select {
			case <-exited:
				deadline = time.Time{} // the port was not free yet
			case <-time.After(20 * time.Millisecond):
			}
		}
		kill()
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	ss.t.Fatalf("redis-server did not come back on %s; log:\n%s", addr, log)
}

func (ss *sentinelSoak) apply(sk *soak, kind string, f *fault) {
	t := ss.t
	// Every fault starts from a settled deployment (a replica to promote):
	// after a failover that takes the sentinels 10–20 s.
	waited := time.Now()
	before, _ := ss.stable()
	if d := time.Since(waited); d > 100*time.Millisecond {
		f.at = time.Now()
		f.note = fmt.Sprintf("(waited %.1fs for a settled deployment) ", d.Seconds())
	}
	f.target = before
	// failedOver: after a fault on before, the first primary the sentinels
	// named instead (within 6 s, or 30 s when a failover is certain) and
	// when; ok false if none.
	failedOver := func(within time.Duration) (string, time.Time, bool) { return ss.waitSwitch(before, within) }
	switch kind {
	case "primary-kill9":
		w := sk.o.openLoss(f.at.Add(-lossMargin))
		ss.kill[before]()
		now, at, ok := failedOver(30 * time.Second)
		if !ok {
			t.Fatalf("no failover within 30 s after the primary %s was killed", before)
		}
		f.settled = at
		if ss.restartPrimary {
			// At once, empty, as a primary (a supervisor restarting the
			// crashed process): the sentinels turn it into the new
			// primary's replica 10-20 s later (awaited by the next fault).
			ss.restartAt(before, "")
			sk.o.closeLoss(w, at.Add(switchMargin))
			f.note += fmt.Sprintf("failover to %s seen after %.1fs; the old primary restarted at once, empty, as a primary",
				now, at.Sub(f.at).Seconds())
			break
		}
		// Later, as the new primary's replica (a rebooted host whose
		// config says so): once every sentinel names the new primary.
		agreed := ss.waitAgree(now)
		ss.restartAt(before, now)
		sk.o.closeLoss(w, at.Add(switchMargin))
		f.note += fmt.Sprintf("failover to %s seen after %.1fs, by every sentinel after %.1fs; the old primary restarted then as its replica",
			now, at.Sub(f.at).Seconds(), agreed.Sub(f.at).Seconds())
	case "sentinel-failover":
		w := sk.o.openLoss(f.at.Add(-lossMargin))
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := respDo(ss.d.Sentinels[0].Addr, "SENTINEL", "FAILOVER", redistest.SentinelMaster)
			if err == nil && r == "OK" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("SENTINEL FAILOVER: %q %v", r, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		now, at, ok := failedOver(30 * time.Second)
		if !ok {
			t.Fatal("SENTINEL FAILOVER: no new primary within 30 s")
		}
		f.settled = at
		sk.o.closeLoss(w, at.Add(switchMargin))
		f.note += fmt.Sprintf("failover to %s seen after %.1fs", now, at.Sub(f.at).Seconds())
	case "client-kill-pubsub":
		r, err := respDo(before, "CLIENT", "KILL", "TYPE", "pubsub")
		if err != nil {
			t.Fatalf("CLIENT KILL TYPE pubsub on %s: %v", before, err)
		}
		f.note += r + " pub/sub connections killed"
	case "redis-shutdown-nosave":
		// The primary restarts empty on its port. If the sentinels do not
		// fail over, its replica resyncs from it and the data set is lost,
		// as on a single Redis; if they do, they promote the replica with
		// what it had. Which one happened is known only afterwards: until
		// then every API room is undetermined.
		sk.o.pendLoss()
		w := sk.o.openLoss(f.at.Add(-lossMargin))
		_, _ = respDo(before, "SHUTDOWN", "NOSAVE") // no reply: the server closes the connection
		for deadline := time.Now().Add(10 * time.Second); ; {
			if _, err := respDo(before, "PING"); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still answers after SHUTDOWN NOSAVE", before)
			}
			time.Sleep(10 * time.Millisecond)
		}
		ss.restartAt(before, "")
		restarted := time.Now()
		f.settled = restarted
		now, at, changed := failedOver(6 * time.Second)
		m, st := ss.stable()
		switch {
		case !changed && m == before:
			sk.o.settleLoss(true, f.at)
			sk.o.closeLoss(w, restarted.Add(time.Second))
			f.note += fmt.Sprintf("restarted empty after %.1fs, no failover: the data set lost", restarted.Sub(f.at).Seconds())
		case m == before:
			// The sentinels named the replica, then the restarted server
			// again: whether it synced the data set from the replica in
			// between is not known.
			sk.o.settleLoss(false, f.at)
			sk.o.closeLoss(w, st.Add(switchMargin))
			f.settled = st
			f.note += fmt.Sprintf("restarted empty after %.1fs; the sentinels named %s after %.1fs, then %s again (settled after %.1fs)",
				restarted.Sub(f.at).Seconds(), now, at.Sub(f.at).Seconds(), before, st.Sub(f.at).Seconds())
		default:
			sk.o.settleLoss(false, f.at)
			until := at
			if m != now {
				until = st
			}
			f.settled = until
			sk.o.closeLoss(w, until.Add(switchMargin))
			f.note += fmt.Sprintf("restarted empty after %.1fs, but the sentinels failed over to %s (seen after %.1fs, settled on %s after %.1fs)",
				restarted.Sub(f.at).Seconds(), now, at.Sub(f.at).Seconds(), m, st.Sub(f.at).Seconds())
		}
	case "debug-sleep-1":
		// A primary stalled for 1 s, more than down-after: the sentinels
		// may fail over while it sleeps; it then wakes up as a stale
		// primary until they demote it.
		w := sk.o.openLoss(f.at.Add(-lossMargin))
		if _, err := respDo(before, "DEBUG", "SLEEP", "1"); err != nil {
			t.Fatalf("DEBUG SLEEP on %s: %v", before, err)
		}
		now, at, changed := failedOver(6 * time.Second)
		if !changed {
			sk.o.closeLoss(w, w.from) // the primary stayed: nothing lost
			f.note += "no failover"
			break
		}
		f.settled = at
		sk.o.closeLoss(w, at.Add(switchMargin))
		f.note += fmt.Sprintf("the sentinels failed over to %s (seen after %.1fs)", now, at.Sub(f.at).Seconds())
	default:
		t.Fatalf("sentinel backend: unknown fault %q", kind)
	}
}

// respDo sends one command to addr and returns its reply flattened to
// strings joined by ":" (like redistest's DoAll), without failing the test:
// a fault may have taken the server down. An error reply is an error.
func respDo(addr string, args ...string) (string, error) { return redistest.Command(addr, args...) }
