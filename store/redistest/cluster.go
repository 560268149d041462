package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/presenced/presenced/internal/redisslot"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// clusterDeadline bounds every wait for the cluster to converge (start,
// failover, resharding): generous, since this box is shared and a slow
// convergence is not what these tests are about.
const clusterDeadline = 30 * time.Second

// migrateBatch is how many keys one MIGRATE moves in MoveSlot: smaller
// than the 100 keys of the harness's own test, so that its batch loop runs
// more than once.
const migrateBatch = 64

// ClusterConfig shapes the cluster StartCluster builds.
type ClusterConfig struct {
	Primaries   int           // default 3 (redis-cli refuses fewer)
	Replicas    int           // replicas per primary, default 0 (1 for failover tests)
	NodeTimeout time.Duration // cluster-node-timeout, default 1s (fast failover)
}

// Cluster is a Redis Cluster of redis-server processes on free loopback
// ports, owned by one test; every node stops when the test ends.
type Cluster struct {
	// Nodes are all nodes as created: the primaries first, ordered by the
	// first slot they were given (Nodes[0] owns slot 0), then the replicas
	// in the order of their primaries. The order never changes, even when
	// a failover changes the roles.
	Nodes []*Server

	cfg ClusterConfig
	ids map[*Server]string // node IDs; kept across restarts in nodes.conf
}

// StartCluster starts Primaries*(1+Replicas) nodes, joins them with
// `redis-cli --cluster create`, and returns once every node reports
// cluster_state:ok, knows every other node, agrees on the owner of every
// slot, and every replica's link to its primary is up.
//
// Each node runs with keyspace expiry notifications on (Ex), so that a
// promoted replica has them too, and with cluster-allow-replica-migration
// off, so that a primary left without slots by MoveSlot stays a primary.
//
// Without redis-server or redis-cli on PATH the test is skipped, except
// under CI=true, where it fails.
func StartCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	server := lookBin(t, "redis-server", "redis-server")
	cli := lookBin(t, "redis-cli", "redis-tools")
	if cfg.Primaries == 0 {
		cfg.Primaries = 3
	}
	if cfg.NodeTimeout == 0 {
		cfg.NodeTimeout = time.Second
	}
	if cfg.Primaries < 3 || cfg.Replicas < 0 {
		t.Fatalf("redistest: a cluster needs at least 3 primaries and no negative replica count, got %+v", cfg)
	}
	c := &Cluster{cfg: cfg, ids: map[*Server]string{}}
	n := cfg.Primaries * (1 + cfg.Replicas)
	addrs := make([]string, 0, n)
	for range n {
		s := startClusterNode(t, server, cfg.NodeTimeout)
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterDeadline)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(cfg.Replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, s := range c.Nodes {
		id, err := call(s.Addr, "CLUSTER", "MYID")
		if err != nil {
			t.Fatalf("CLUSTER MYID on %s: %v", s.Addr, err)
		}
		c.ids[s] = asString(id)
	}
	c.Settle(t)
	c.order(t)
	return c
}

func lookBin(t testing.TB, name, pkg string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not on PATH (required under CI=true): %v", name, err)
		}
		t.Skipf("%s not on PATH; install it (apt-get install %s) to run the Redis Cluster tests", name, pkg)
	}
	return bin
}

// startClusterNode starts one empty cluster-enabled redis-server. A node
// listens on its port and on port+10000 (the cluster bus), so both must be
// free and below 65536.
func startClusterNode(t testing.TB, bin string, timeout time.Duration) *Server {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; attempt < 20; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if port+10000 > 65535 || !portFree(port+10000) {
			continue
		}
		args := []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--logfile", filepath.Join(dir, "redis.log"),
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.FormatInt(timeout.Milliseconds(), 10),
			"--cluster-allow-replica-migration", "no",
			// Factor 0: a replica may be promoted however long its link has
			// been down, so a failover test gets a promotion, not a cluster
			// left down.
			"--cluster-replica-validity-factor", "0",
			"--notify-keyspace-events", "Ex",
			// No delay before a replica's full sync (the default waits 5 s
			// for more replicas).
			"--repl-diskless-sync-delay", "0",
		}
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
	t.Fatalf("cluster node did not become ready; log:\n%s", log)
	return nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// order sorts Nodes as documented: primaries by first slot, then replicas
// by their primary's position.
func (c *Cluster) order(t testing.TB) {
	t.Helper()
	v := c.mustView(t, c.Nodes[0])
	first := map[string]int{}
	for slot := Slots - 1; slot >= 0; slot-- {
		first[v.owner[slot]] = slot
	}
	rank := func(s *Server) int {
		n := v.byID[c.ids[s]]
		if n.master {
			return first[n.id]
		}
		return Slots + first[n.masterID]
	}
	sort.SliceStable(c.Nodes, func(i, j int) bool { return rank(c.Nodes[i]) < rank(c.Nodes[j]) })
}

// Seeds returns the address of every node ("127.0.0.1:port"), live or not,
// in the order of Nodes.
func (c *Cluster) Seeds() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr
	}
	return out
}

// URL returns the store's cluster URL listing every node as a seed:
// redis+cluster://first?addr=second&addr=third… (go-redis's
// ParseClusterURL shape under the scheme redis+cluster).
func (c *Cluster) URL() string {
	seeds := c.Seeds()
	var b strings.Builder
	b.WriteString("redis+cluster://" + seeds[0])
	for i, s := range seeds[1:] {
		if i == 0 {
			b.WriteString("?addr=")
		} else {
			b.WriteString("&addr=")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Primaries returns the current masters, after any failover, in the order
// of Nodes: live nodes that CLUSTER NODES on a live node calls master and
// not failed. A master that MoveSlot left without slots is still one.
func (c *Cluster) Primaries(t testing.TB) []*Server {
	t.Helper()
	v := c.mustView(t, nil)
	var out []*Server
	for _, s := range c.Nodes {
		if n, ok := v.byID[c.ids[s]]; ok && n.master && !n.failed && s.alive() {
			out = append(out, s)
		}
	}
	return out
}

// PrimaryOf returns the master of slot as the first live node sees it: a
// node killed by hand stays the master until the cluster fails it over.
// After StartCluster, KillPrimaryOf, MoveSlot and Settle all nodes agree.
func (c *Cluster) PrimaryOf(t testing.TB, slot int) *Server {
	t.Helper()
	if slot < 0 || slot >= Slots {
		t.Fatalf("redistest: slot %d out of range", slot)
	}
	v := c.mustView(t, nil)
	s := c.byID(v.owner[slot])
	if s == nil {
		t.Fatalf("redistest: no node owns slot %d; CLUSTER NODES:\n%s", slot, v.raw)
	}
	return s
}

// DoOn sends one command to node s (no redirection followed) and returns
// its reply flattened like Server.DoAll; an error reply reads as its text
// ("MOVED 866 127.0.0.1:40001").
func (c *Cluster) DoOn(t testing.TB, s *Server, args ...string) string {
	t.Helper()
	return s.DoAll(t, args...)
}

// Do runs a key command with redis-cli -c semantics: it is sent to the
// master of its first key's slot (args[1]; the first live node for a
// command without arguments) and follows MOVED and ASK redirections,
// retrying on TRYAGAIN and CLUSTERDOWN, and on a node it cannot reach (a
// master killed by hand, not yet failed over), until a real reply or 30 s.
// The reply is flattened like Server.DoAll; an error reply other than
// those fails the test.
func (c *Cluster) Do(t testing.TB, args ...string) string {
	t.Helper()
	pick := func() string {
		if len(args) > 1 {
			return c.PrimaryOf(t, Slot(args[1])).Addr
		}
		return c.live(t)[0].Addr
	}
	addr := pick()
	asking := false
	deadline := time.Now().Add(clusterDeadline)
	for {
		cmds := [][]string{args}
		if asking {
			cmds = [][]string{{"ASKING"}, args}
		}
		replies, err := callSeq(addr, cmds...)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s on %s: %v", args[0], addr, err)
			}
			time.Sleep(50 * time.Millisecond)
			addr, asking = pick(), false
			continue
		}
		reply := replies[len(replies)-1]
		e, isErr := reply.(respError)
		if !isErr {
			return strings.Join(flatten(reply, nil), ":")
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still redirected or refused after %v: %s", args[0], clusterDeadline, e)
		}
		kind, rest, _ := strings.Cut(string(e), " ")
		asking = false
		switch kind {
		case "MOVED", "ASK":
			_, to, _ := strings.Cut(rest, " ")
			addr, asking = to, kind == "ASK"
		case "TRYAGAIN", "CLUSTERDOWN":
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("%s on %s: %s", args[0], addr, e)
		}
	}
}

// KillPrimaryOf kills the master of slot with SIGKILL and returns once one
// of its replicas has been promoted and every live node has converged again
// (see Settle). It needs Replicas >= 1. The harness never restarts the
// killed node; killed.Restart(t) starts it again with its nodes.conf but
// without its data (no persistence), and it rejoins as a replica of the
// node that took over its slots, resyncing from it: call Settle to wait
// for that.
func (c *Cluster) KillPrimaryOf(t testing.TB, slot int) (killed *Server) {
	t.Helper()
	if c.cfg.Replicas < 1 {
		t.Fatalf("redistest: KillPrimaryOf needs ClusterConfig.Replicas >= 1")
	}
	killed = c.PrimaryOf(t, slot)
	v := c.mustView(t, killed)
	id := c.ids[killed]
	heirs := map[string]bool{}
	for _, n := range v.nodes {
		if n.masterID == id && !n.failed && c.byID(n.id) != nil && c.byID(n.id).alive() {
			heirs[n.id] = true
		}
	}
	if len(heirs) == 0 {
		t.Fatalf("redistest: the master of slot %d (%s) has no live replica; CLUSTER NODES:\n%s", slot, killed.Addr, v.raw)
	}
	killed.Kill()
	c.settle(t, func(v *clusterView) error {
		if !heirs[v.owner[slot]] {
			return fmt.Errorf("slot %d not yet owned by a replica of %s", slot, killed.Addr)
		}
		return nil
	})
	return killed
}

// MoveSlot reshards one slot with its keys to the master to, live:
// CLUSTER SETSLOT IMPORTING on to,
// MIGRATING on the owner, MIGRATE of the keys in batches (GETKEYSINSLOT)
// until none is left, then SETSLOT NODE on to, the old owner and every
// other master. Clients in between see ASK redirections. It returns once
// every live node agrees that to owns the slot.
func (c *Cluster) MoveSlot(t testing.TB, slot int, to *Server) {
	t.Helper()
	from := c.PrimaryOf(t, slot)
	if from == to {
		return
	}
	v := c.mustView(t, nil)
	toID, fromID := c.ids[to], c.ids[from]
	if n, ok := v.byID[toID]; !ok || !n.master || n.failed || !to.alive() {
		t.Fatalf("redistest: MoveSlot target %s is not a live master; CLUSTER NODES:\n%s", to.Addr, v.raw)
	}
	s := strconv.Itoa(slot)
	mustCall(t, to, "CLUSTER", "SETSLOT", s, "IMPORTING", fromID)
	mustCall(t, from, "CLUSTER", "SETSLOT", s, "MIGRATING", toID)
	host, port, _ := strings.Cut(to.Addr, ":")
	for {
		keys := flatten(mustCall(t, from, "CLUSTER", "GETKEYSINSLOT", s, strconv.Itoa(migrateBatch)), nil)
		if len(keys) == 0 {
			break
		}
		// No REPLACE: a key that exists on both nodes means a client wrote
		// around the MIGRATING/IMPORTING rules, which a test should see.
		mustCall(t, from, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, keys...)...)
	}
	// The target first: once the old owner answers MOVED, the target must
	// already serve the slot, or clients bounce between the two. Then the
	// old owner (which refuses if it still holds keys), then the rest.
	mustCall(t, to, "CLUSTER", "SETSLOT", s, "NODE", toID)
	mustCall(t, from, "CLUSTER", "SETSLOT", s, "NODE", toID)
	for _, m := range c.Primaries(t) {
		if m != to && m != from {
			mustCall(t, m, "CLUSTER", "SETSLOT", s, "NODE", toID)
		}
	}
	c.settle(t, func(v *clusterView) error {
		if v.owner[slot] != toID {
			return fmt.Errorf("slot %d not yet owned by %s", slot, to.Addr)
		}
		return nil
	})
}

// Settle waits until the live nodes have converged: each reports
// cluster_state:ok with all 16384 slots assigned and served, knows every
// node (dead ones included), shows no slot migrating or importing, and all
// see the same owner for every slot (a live node) and the same role for
// every live node; every live replica's link to its master is up. Use it
// after Server.Restart, or after killing a node by hand.
func (c *Cluster) Settle(t testing.TB) {
	t.Helper()
	c.settle(t, nil)
}

func (c *Cluster) settle(t testing.TB, also func(*clusterView) error) {
	t.Helper()
	deadline := time.Now().Add(clusterDeadline)
	for {
		v, err := c.converged()
		if err == nil && also != nil {
			err = also(v)
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			var dump strings.Builder
			for _, s := range c.live(t) {
				raw, _ := call(s.Addr, "CLUSTER", "NODES")
				fmt.Fprintf(&dump, "--- %s:\n%s", s.Addr, asString(raw))
			}
			t.Fatalf("redistest: cluster did not converge within %v: %v\n%s", clusterDeadline, err, dump.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converged checks what Settle documents and returns the common view.
func (c *Cluster) converged() (*clusterView, error) {
	var ref *clusterView
	var refSig string
	liveID := map[string]bool{}
	for _, s := range c.Nodes {
		if s.alive() {
			liveID[c.ids[s]] = true
		}
	}
	for _, s := range c.Nodes {
		if !liveID[c.ids[s]] {
			continue
		}
		raw, err := call(s.Addr, "CLUSTER", "INFO")
		if err != nil {
			return nil, fmt.Errorf("CLUSTER INFO on %s: %w", s.Addr, err)
		}
		info := fields(asString(raw))
		for k, want := range map[string]string{
			"cluster_state":          "ok",
			"cluster_slots_assigned": strconv.Itoa(Slots),
			"cluster_slots_ok":       strconv.Itoa(Slots),
			"cluster_known_nodes":    strconv.Itoa(len(c.Nodes)),
		} {
			if info[k] != want {
				return nil, fmt.Errorf("%s: %s:%s, want %s", s.Addr, k, info[k], want)
			}
		}
		v, err := c.view(s)
		if err != nil {
			return nil, err
		}
		me := v.byID[c.ids[s]]
		if me == nil || !me.myself {
			return nil, fmt.Errorf("%s: CLUSTER NODES has no myself line for %s", s.Addr, c.ids[s])
		}
		if me.transit {
			return nil, fmt.Errorf("%s: a slot is still migrating or importing", s.Addr)
		}
		if !me.master {
			raw, err := call(s.Addr, "INFO", "replication")
			if err != nil {
				return nil, fmt.Errorf("INFO on %s: %w", s.Addr, err)
			}
			if st := fields(asString(raw))["master_link_status"]; st != "up" {
				return nil, fmt.Errorf("replica %s: master_link_status:%s", s.Addr, st)
			}
		}
		var sig strings.Builder
		for _, o := range c.Nodes {
			if !liveID[c.ids[o]] {
				continue
			}
			n := v.byID[c.ids[o]]
			if n == nil {
				return nil, fmt.Errorf("%s does not know %s", s.Addr, o.Addr)
			}
			fmt.Fprintf(&sig, "%s master=%t of=%s failed=%t\n", o.Addr, n.master, n.masterID, n.failed)
		}
		for slot, id := range v.owner {
			if !liveID[id] {
				return nil, fmt.Errorf("%s: slot %d owned by %q, not a live node", s.Addr, slot, id)
			}
		}
		if ref == nil {
			ref, refSig = v, sig.String()
			continue
		}
		if sig.String() != refSig {
			return nil, fmt.Errorf("%s and %s disagree on roles:\n%s---\n%s", ref.from, s.Addr, refSig, sig.String())
		}
		if v.owner != ref.owner {
			return nil, fmt.Errorf("%s and %s disagree on slot owners", ref.from, s.Addr)
		}
	}
	if ref == nil {
		return nil, errors.New("no live node")
	}
	return ref, nil
}

// NodeID returns s's cluster node ID (stable across Restart), for tests
// that send CLUSTER commands of their own (SETSLOT, FAILOVER…). Settle
// expects every node to stay known: do not FORGET one.
func (c *Cluster) NodeID(s *Server) string { return c.ids[s] }

func (c *Cluster) byID(id string) *Server {
	for s, sid := range c.ids {
		if sid == id {
			return s
		}
	}
	return nil
}

func (c *Cluster) live(t testing.TB) []*Server {
	t.Helper()
	var out []*Server
	for _, s := range c.Nodes {
		if s.alive() {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Fatalf("redistest: no live cluster node")
	}
	return out
}

// mustView reads CLUSTER NODES on s, or on the first live node if s is nil.
func (c *Cluster) mustView(t testing.TB, s *Server) *clusterView {
	t.Helper()
	if s == nil {
		s = c.live(t)[0]
	}
	v, err := c.view(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// clusterView is one node's CLUSTER NODES.
type clusterView struct {
	from  string // the node asked
	raw   string
	nodes []*clusterNode
	byID  map[string]*clusterNode
	owner [Slots]string // node ID per slot, "" if unassigned
}

type clusterNode struct {
	id, addr       string
	myself, master bool
	failed         bool   // flagged fail (agreed), not just fail? (suspected)
	masterID       string // "-" for a master
	transit        bool   // a [slot->-id] or [slot-<-id] entry (myself only)
}

func (c *Cluster) view(s *Server) (*clusterView, error) {
	raw, err := call(s.Addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("CLUSTER NODES on %s: %w", s.Addr, err)
	}
	return parseNodes(s.Addr, asString(raw))
}

// parseNodes reads the CLUSTER NODES format: <id> <ip:port@cport[,host]>
// <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
func parseNodes(from, raw string) (*clusterView, error) {
	v := &clusterView{from: from, raw: raw, byID: map[string]*clusterNode{}}
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("%s: bad CLUSTER NODES line %q", from, line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := &clusterNode{id: f[0], addr: addr, masterID: f[3]}
		for _, flag := range strings.Split(f[2], ",") {
			switch flag {
			case "myself":
				n.myself = true
			case "master":
				n.master = true
			case "fail":
				n.failed = true
			}
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				n.transit = true
				continue
			}
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a < 0 || b >= Slots || a > b {
				return nil, fmt.Errorf("%s: bad slot range %q", from, r)
			}
			for slot := a; slot <= b; slot++ {
				v.owner[slot] = n.id
			}
		}
		v.nodes = append(v.nodes, n)
		v.byID[n.id] = n
	}
	return v, nil
}

// fields parses INFO-style "key:value" lines.
func fields(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

func mustCall(t testing.TB, s *Server, args ...string) any {
	t.Helper()
	v, err := call(s.Addr, args...)
	if err != nil {
		t.Fatalf("%s on %s: %v", strings.Join(args, " "), s.Addr, err)
	}
	return v
}

// respError is an error reply (-ERR …, -MOVED …), without the dash.
type respError string

func (e respError) Error() string { return string(e) }

// call sends one command and returns its reply: string, int64, []any or
// nil; an error reply is returned as a respError.
func call(addr string, args ...string) (any, error) {
	replies, err := callSeq(addr, args)
	if err != nil {
		return nil, err
	}
	if e, ok := replies[0].(respError); ok {
		return nil, e
	}
	return replies[0], nil
}

// callSeq sends commands in order on one connection (as WAIT and ASKING
// need) and returns one reply each; error replies are respError values.
func callSeq(addr string, cmds ...[]string) ([]any, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for _, args := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	out := make([]any, len(cmds))
	for i := range cmds {
		if out[i], err = readValue(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readValue(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return respError(line[1:]), nil
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readValue(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply %q", line)
}

// flatten lists a reply's strings depth first, as Server.DoAll does.
func flatten(v any, out []string) []string {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			out = flatten(e, out)
		}
	case nil:
	case string:
		out = append(out, v)
	case respError:
		out = append(out, string(v))
	default:
		out = append(out, fmt.Sprint(v))
	}
	return out
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

// Slot returns the cluster hash slot of key: CRC16 (XMODEM) of the key, or
// of its hash tag, modulo 16384. The tag is what lies between the first
// "{" and the first "}" after it, if that is not empty ("{}" and an
// unclosed "{" hash the whole key), as in the Redis Cluster specification.
func Slot(key string) int { return redisslot.Of(key) }

// FailoverPrimaryOf promotes a replica of slot's master with CLUSTER
// FAILOVER (a planned failover: the old master stays up and becomes a
// replica of the promoted one) and returns the promoted node once every
// live node agrees. It needs Replicas >= 1.
func (c *Cluster) FailoverPrimaryOf(t testing.TB, slot int) (promoted *Server) {
	t.Helper()
	old := c.PrimaryOf(t, slot)
	v := c.mustView(t, old)
	for _, n := range v.nodes {
		if n.masterID == c.ids[old] && !n.failed {
			if s := c.byID(n.id); s != nil && s.alive() {
				promoted = s
				break
			}
		}
	}
	if promoted == nil {
		t.Fatalf("redistest: the master of slot %d (%s) has no live replica; CLUSTER NODES:\n%s", slot, old.Addr, v.raw)
	}
	if r := c.DoOn(t, promoted, "CLUSTER", "FAILOVER"); r != "+OK" && r != "OK" {
		t.Fatalf("CLUSTER FAILOVER on %s: %s", promoted.Addr, r)
	}
	id := c.ids[promoted]
	c.settle(t, func(v *clusterView) error {
		if v.owner[slot] != id {
			return fmt.Errorf("slot %d not yet owned by %s", slot, promoted.Addr)
		}
		return nil
	})
	return promoted
}
