package handlers

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// A reader that stops reading must not delay anyone else: one stalled
// client and one healthy client on the same room; the room churns; the
// healthy one keeps receiving every change, and the stalled one is dropped.
func TestStalledReaderDoesNotBlockOthers(t *testing.T) {
	// Sessions must outlive the churn however slow the machine is: a long TTL.
	opts := storeOptions()
	opts.TTL = time.Minute
	st := store.NewMemory(opts)
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) {
		c.WriteDeadline = 300 * time.Millisecond
		c.TTL = time.Minute
		// The test flips statuses as fast as the healthy stream takes them,
		// far past the per-session status limit.
		c.RateLimit = false
	})
	c := newClient(t)

	// Fifty members with names at the 64-character limit make every render
	// of the stack and the member list tens of kilobytes, so the stalled
	// socket fills quickly.
	const members = 50
	toks := make([]string, members)
	for i := range toks {
		id := fmt.Sprintf("user-%02d", i)
		toks[i] = n.token(id, strings.Repeat("Long Display Name ", 3)+id)
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/big", toks[i], `{"action":"join","sessionId":"sess-`+id+`"}`))
	}

	stalled := dialStalled(t, n, "/sse/room/big?sid=stalled-tab-1&max=100&list=1", n.token("stalled", "Stalled"))
	defer stalled.Close()
	healthy := openSSE(t, c, n.base+"/sse/room/big?sid=healthy-tab-1&max=100&list=1", n.token("healthy", "Healthy"))
	healthy.waitFor("state", membersWith(members+2, "stalled", "healthy"))

	dropped := func() bool {
		return n.metric("presenced_streams_dropped_total", `reason="slow"`)+
			n.metric("presenced_streams_dropped_total", `reason="stalled"`) >= 1
	}
	statuses := []string{"busy", "away"}
	deadline := time.Now().Add(60 * time.Second)
	round := 0
	for ; !dropped(); round++ {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled reader was never dropped after %d rounds", round)
		}
		// Change one member's status and wait until the healthy client
		// has it: it must keep receiving while the other one is stuck.
		i := round % members
		want := statuses[(round/members)%len(statuses)] // always a change
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", toks[i],
			`{"status":"`+want+`","sessionId":"sess-`+fmt.Sprintf("user-%02d", i)+`"}`))
		healthy.waitFor(fmt.Sprintf("round %d", round), named("presence-"+fmt.Sprintf("user-%02d", i), `data-status="`+want+`"`))
	}
	t.Logf("stalled reader dropped after %d rounds (slow: %v, stalled: %v)", round,
		n.metric("presenced_streams_dropped_total", `reason="slow"`), n.metric("presenced_streams_dropped_total", `reason="stalled"`))
	// The server really closed it: reading what is buffered ends in EOF.
	_ = stalled.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.Copy(io.Discard, stalled); err != nil {
		t.Fatalf("the stalled connection was not closed by the server: %v", err)
	}

	// And the healthy one still gets changes after the drop.
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", toks[0], `{"status":"busy","sessionId":"sess-user-00"}`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", toks[0], `{"status":"away","sessionId":"sess-user-00"}`))
	healthy.waitFor("after the drop", isStatus("user-00", store.StatusAway))
}

// dialStalled opens a stream over a raw TCP connection with a tiny receive
// buffer, sends the request and never reads.
func dialStalled(t *testing.T, n *node, path, token string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", n.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n", path, n.srv.Addr(), token)
	return conn
}
