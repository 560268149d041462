package redistest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCluster runs the harness on one 3-primary cluster without replicas
// (a start costs seconds, so the subtests share it).
func TestCluster(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, ClusterConfig{})
	t.Logf("3-node cluster up in %v", time.Since(start))

	t.Run("Start", func(t *testing.T) {
		if len(c.Nodes) != 3 {
			t.Fatalf("%d nodes, want 3", len(c.Nodes))
		}
		if p := c.Primaries(t); !slices.Equal(p, c.Nodes) {
			t.Fatalf("primaries %v, want every node %v", addrs(p), addrs(c.Nodes))
		}
		for _, s := range c.Nodes {
			info := fields(c.DoOn(t, s, "CLUSTER", "INFO"))
			if info["cluster_state"] != "ok" || info["cluster_slots_assigned"] != "16384" || info["cluster_slots_ok"] != "16384" {
				t.Fatalf("%s: cluster_state:%s slots_assigned:%s slots_ok:%s", s.Addr,
					info["cluster_state"], info["cluster_slots_assigned"], info["cluster_slots_ok"])
			}
			if got := c.DoOn(t, s, "CONFIG", "GET", "notify-keyspace-events"); !strings.Contains(got, "E") || !strings.Contains(got, "x") {
				t.Fatalf("%s: notify-keyspace-events %q, want E and x", s.Addr, got)
			}
		}
		// Every slot has an owner, and Nodes[0] owns slot 0 as documented.
		owners := map[*Server]int{}
		for _, id := range c.mustView(t, nil).owner {
			owners[c.byID(id)]++
		}
		if len(owners) != 3 || c.PrimaryOf(t, 0) != c.Nodes[0] {
			t.Fatalf("slot owners %v; slot 0 on %s, want 3 owners and slot 0 on %s", owners, c.PrimaryOf(t, 0).Addr, c.Nodes[0].Addr)
		}
		if want := "redis+cluster://" + c.Nodes[0].Addr + "?addr=" + c.Nodes[1].Addr + "&addr=" + c.Nodes[2].Addr; c.URL() != want {
			t.Fatalf("URL %q, want %q", c.URL(), want)
		}
	})

	t.Run("Slot", func(t *testing.T) {
		keys := []string{"", "a", "foo", "{", "}", "{}", "{}a", "a{}", "{}{a}", "a{}b{c}", "{a}", "{a}b", "b{a}",
			"x{a}y{b}", "{{a}}", "{a}}", "}{a}", "a{b", "a}b{c}", "{user1000}.following", "123456789", "ü{é}",
			"\x00\xff{\x01}"}
		for i := range 300 {
			keys = append(keys, fmt.Sprintf("Pu:%d", i), fmt.Sprintf("{r%d}:members", i))
		}
		s := c.Nodes[0]
		for _, k := range keys {
			want, err := strconv.Atoi(c.DoOn(t, s, "CLUSTER", "KEYSLOT", k))
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
			}
			if got := Slot(k); got != want {
				t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
			}
		}
		// The specification's check value: CRC16/XMODEM("123456789") is 0x31C3.
		if got := Slot("123456789"); got != 0x31C3%Slots {
			t.Errorf("Slot(123456789) = %d, want %d", got, 0x31C3%Slots)
		}
	})

	t.Run("MoveSlot", func(t *testing.T) {
		slot := Slot("{moved}")
		from := c.PrimaryOf(t, slot)
		to := c.Nodes[(slices.Index(c.Nodes, from)+1)%len(c.Nodes)]
		for i := range 100 {
			if got := c.Do(t, "SET", fmt.Sprintf("{moved}k%d", i), fmt.Sprint("v", i)); got != "OK" {
				t.Fatalf("SET: %s", got)
			}
		}
		if got := c.Do(t, "SET", "{moved}ttl", "x", "PX", "600000"); got != "OK" {
			t.Fatalf("SET PX: %s", got)
		}
		// A neighbour in another slot stays where it is.
		other := c.PrimaryOf(t, Slot("{stays}"))
		c.Do(t, "SET", "{stays}k", "here")

		start := time.Now()
		c.MoveSlot(t, slot, to)
		t.Logf("slot %d with 101 keys moved in %v", slot, time.Since(start))

		if got := c.PrimaryOf(t, slot); got != to {
			t.Fatalf("slot %d on %s after MoveSlot, want %s", slot, got.Addr, to.Addr)
		}
		for _, s := range c.Nodes {
			if got := c.mustView(t, s).owner[slot]; got != c.NodeID(to) {
				t.Fatalf("%s sees slot %d on %s, want %s", s.Addr, slot, got, c.NodeID(to))
			}
		}
		if n := c.DoOn(t, to, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)); n != "101" {
			t.Fatalf("new owner holds %s keys of slot %d, want 101", n, slot)
		}
		if n := c.DoOn(t, from, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)); n != "0" {
			t.Fatalf("old owner still holds %s keys of slot %d", n, slot)
		}
		for i := range 100 {
			k := fmt.Sprintf("{moved}k%d", i)
			if got := c.DoOn(t, to, "GET", k); got != fmt.Sprint("v", i) {
				t.Fatalf("GET %s on the new owner: %q", k, got)
			}
		}
		if ms, _ := strconv.Atoi(c.DoOn(t, to, "PTTL", "{moved}ttl")); ms <= 0 || ms > 600000 {
			t.Fatalf("PTTL after the move: %d ms, want the TTL kept", ms)
		}
		if got := c.DoOn(t, from, "GET", "{moved}k0"); !strings.HasPrefix(got, "MOVED "+strconv.Itoa(slot)+" "+to.Addr) {
			t.Fatalf("GET on the old owner: %q, want a MOVED to %s", got, to.Addr)
		}
		if got := c.Do(t, "GET", "{moved}k7"); got != "v7" {
			t.Fatalf("Do GET after the move: %q", got)
		}
		if got := c.DoOn(t, other, "GET", "{stays}k"); got != "here" {
			t.Fatalf("a key of another slot: %q", got)
		}
	})

	t.Run("DoFollowsRedirections", func(t *testing.T) {
		// Sent to the wrong node on purpose, Do must still land it.
		for _, k := range []string{"a", "b", "c", "{x}1", "{y}2"} {
			if got := c.Do(t, "SET", k, "v"+k); got != "OK" {
				t.Fatalf("SET %s: %q", k, got)
			}
			if got := c.DoOn(t, c.PrimaryOf(t, Slot(k)), "GET", k); got != "v"+k {
				t.Fatalf("GET %s on its master: %q", k, got)
			}
		}
		// A slot half migrated: the key already on the target answers only
		// after ASKING, which Do sends on an ASK redirection.
		slot := Slot("{ask}")
		from := c.PrimaryOf(t, slot)
		to := c.Nodes[(slices.Index(c.Nodes, from)+1)%len(c.Nodes)]
		s := strconv.Itoa(slot)
		c.Do(t, "SET", "{ask}k", "asked")
		c.DoOn(t, to, "CLUSTER", "SETSLOT", s, "IMPORTING", c.NodeID(from))
		c.DoOn(t, from, "CLUSTER", "SETSLOT", s, "MIGRATING", c.NodeID(to))
		host, port, _ := strings.Cut(to.Addr, ":")
		if got := c.DoOn(t, from, "MIGRATE", host, port, "{ask}k", "0", "5000"); got != "OK" {
			t.Fatalf("MIGRATE: %q", got)
		}
		if got := c.DoOn(t, from, "GET", "{ask}k"); !strings.HasPrefix(got, "ASK ") {
			t.Fatalf("GET on the migrating node: %q, want an ASK", got)
		}
		if got := c.Do(t, "GET", "{ask}k"); got != "asked" {
			t.Fatalf("Do GET during migration: %q", got)
		}
		// Finish the move by hand (the slot is empty on from now).
		for _, m := range []*Server{to, from} {
			c.DoOn(t, m, "CLUSTER", "SETSLOT", s, "NODE", c.NodeID(to))
		}
		for _, m := range c.Nodes {
			if m != to && m != from {
				c.DoOn(t, m, "CLUSTER", "SETSLOT", s, "NODE", c.NodeID(to))
			}
		}
		c.Settle(t)
		if got := c.PrimaryOf(t, slot); got != to {
			t.Fatalf("slot %d on %s, want %s", slot, got.Addr, to.Addr)
		}
	})
}

// TestClusterFailover kills a primary of a 3+3 cluster: a replica takes
// over with the acknowledged write, and the killed node, restarted, comes
// back as that replica's replica.
func TestClusterFailover(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, ClusterConfig{Replicas: 1})
	t.Logf("6-node cluster up in %v", time.Since(start))
	if len(c.Nodes) != 6 || len(c.Primaries(t)) != 3 {
		t.Fatalf("%d nodes, %d primaries; want 6 and 3", len(c.Nodes), len(c.Primaries(t)))
	}
	if p := c.Primaries(t); !slices.Equal(p, c.Nodes[:3]) {
		t.Fatalf("primaries %v, want the first three nodes %v", addrs(p), addrs(c.Nodes[:3]))
	}
	slot := Slot("{fo}")
	before := c.PrimaryOf(t, slot)
	// WAIT counts the replicas that acknowledged this connection's writes.
	replies, err := callSeq(before.Addr, []string{"SET", "{fo}k", "kept"}, []string{"WAIT", "1", "0"})
	if err != nil || replies[0] != "OK" || replies[1] != int64(1) {
		t.Fatalf("SET + WAIT 1 0: %v %v", replies, err)
	}

	start = time.Now()
	killed := c.KillPrimaryOf(t, slot)
	t.Logf("kill -9 to a promoted replica and a converged cluster: %v", time.Since(start))
	if killed != before || killed.alive() {
		t.Fatalf("killed %s (alive %t), want %s dead", killed.Addr, killed.alive(), before.Addr)
	}
	after := c.PrimaryOf(t, slot)
	if after == before || !slices.Contains(c.Nodes[3:], after) {
		t.Fatalf("slot %d on %s after the kill, want one of the replicas %v", slot, after.Addr, addrs(c.Nodes[3:]))
	}
	if p := c.Primaries(t); len(p) != 3 || slices.Contains(p, killed) || !slices.Contains(p, after) {
		t.Fatalf("primaries after the kill: %v", addrs(p))
	}
	if got := c.DoOn(t, after, "GET", "{fo}k"); got != "kept" {
		t.Fatalf("GET on the promoted replica: %q, want the acknowledged write", got)
	}
	if got := c.Do(t, "GET", "{fo}k"); got != "kept" {
		t.Fatalf("Do GET after the failover: %q", got)
	}
	if got := c.Do(t, "SET", "{fo}k2", "new"); got != "OK" {
		t.Fatalf("a write after the failover: %q", got)
	}

	// Restart reuses nodes.conf: the node rejoins as a replica of the node
	// that took its slots and resyncs from it (its own data died with it).
	start = time.Now()
	killed.Restart(t)
	c.Settle(t)
	t.Logf("restart to a synced replica: %v", time.Since(start))
	if p := c.Primaries(t); len(p) != 3 || slices.Contains(p, killed) {
		t.Fatalf("primaries after the restart: %v", addrs(p))
	}
	role := c.DoOn(t, killed, "ROLE")
	if !strings.HasPrefix(role, "slave:127.0.0.1:"+strings.TrimPrefix(after.Addr, "127.0.0.1:")+":connected") {
		t.Fatalf("ROLE of the restarted node: %q, want a connected replica of %s", role, after.Addr)
	}
	replies, err = callSeq(killed.Addr, []string{"READONLY"}, []string{"GET", "{fo}k"}, []string{"GET", "{fo}k2"})
	if err != nil || replies[1] != "kept" || replies[2] != "new" {
		t.Fatalf("READONLY GETs on the restarted replica: %v %v", replies, err)
	}

	// A primary killed by hand (each has a live replica now, the restarted
	// node included): Do keeps retrying the unreachable master until its
	// replica takes over, and Settle sees the cluster whole again.
	key := "{by-hand}k"
	second := c.PrimaryOf(t, Slot(key))
	replies, err = callSeq(second.Addr, []string{"SET", key, "still"}, []string{"WAIT", "1", "0"})
	if err != nil || replies[1] != int64(1) {
		t.Fatalf("SET + WAIT on %s: %v %v", second.Addr, replies, err)
	}
	second.Kill()
	if got := c.Do(t, "GET", key); got != "still" {
		t.Fatalf("Do GET across a failover: %q", got)
	}
	c.Settle(t)
	if got := c.PrimaryOf(t, Slot(key)); got == second || !got.alive() {
		t.Fatalf("slot %d still on the killed %s", Slot(key), second.Addr)
	}
}

func addrs(ss []*Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Addr)
	}
	return out
}
