package webhook

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

func clusterNode(t *testing.T, c *redistest.Cluster, prefix string) *store.ClusterStore {
	t.Helper()
	s, err := store.NewCluster(context.Background(), c.URL(), store.Options{KeyPrefix: prefix}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// On a Redis Cluster: two nodes, transitions made on both, every event
// reaches the receiver exactly once. Events are in order per user and per
// room (one partition each), not across them: compared as sets here, and
// each user's status changes in order.
func TestClusterTwoNodesEachEventOnce(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	prefix := redistest.Prefix(t)
	n1, n2 := clusterNode(t, c, prefix), clusterNode(t, c, prefix)
	s := newSink(t)
	d1 := startDispatcher(t, n1, fastOpts(s.srv.URL))
	d2 := startDispatcher(t, n2, fastOpts(s.srv.URL))
	ctx := context.Background()
	want := script(t, ctx, n1, "u1", "u2", "r1")
	want = append(want, script(t, ctx, n2, "u3", "u4", "r2")...)
	waitFor(t, "all events", func() bool { return len(s.got()) >= len(want) })
	stop(d1)
	stop(d2)
	got := s.got()
	uniqueIDs(t, got)
	sorted := func(x []string) []string { x = slices.Clone(x); slices.Sort(x); return x }
	if !equal(sorted(types(got)), sorted(want)) {
		t.Errorf("got\n%q\nwant (in any order)\n%q", types(got), want)
	}
	// "user.status u1 online>busy": a user's status changes, in order.
	statusOf := func(list []string, u string) []string {
		var out []string
		for _, e := range list {
			if f := strings.Fields(e); len(f) > 1 && f[0] == TypeUserStatus && f[1] == u {
				out = append(out, e)
			}
		}
		return out
	}
	for _, u := range []string{"u1", "u3"} { // the users whose status the script changes
		if g, w := statusOf(types(got), u), statusOf(want, u); len(w) == 0 || !equal(g, w) {
			t.Errorf("%s's status changes: got %q, want %q", u, g, w)
		}
	}
}
