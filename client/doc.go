// Package client subscribes to a presenced gateway's JSON event streams
// from Go: it connects, keeps a typed view of the rooms and users it
// follows, delivers typed events, and reconnects.
//
//	c, err := client.New(client.Config{
//		BaseURL: "https://presence.example.com",
//		Room:    "lobby",         // joined as the token's user (Watch: observe only)
//		Rooms:   []string{"ops"}, // watched
//		Users:   []string{"alice", "bob"},
//		Token:   token,           // or TokenFunc for fresh ones
//	})
//	go c.Run(ctx)
//	for ev := range c.Events() {
//		if ev.Type == client.EventJoin {
//			room, _ := c.Room(ev.Room)
//			fmt.Println(ev.User.Name, "joined;", room.Count, "here")
//		}
//	}
//
// It opens GET /sse?room=…&rooms=…&users=…&watch=1&format=json (or the v1
// streams /sse/room/{id} and /sse/users?ids=…, see Endpoint) with
// "Authorization: Bearer". Every connection starts with one `sync` event per
// topic ("topic": "room:{id}" or "users"), which replaces that topic's
// view: the view never depends on events missed while disconnected. Then
// `join`, `leave`, `status` and `typing` diffs are applied to it. Event
// shapes: docs/schema/ in the repository.
//
// A dropped stream (network, gateway shutdown, token expiry, nothing heard
// for IdleTimeout) is reopened after a jittered exponential backoff; the
// session id the gateway assigned is sent back, so a reconnect stays the
// same session. 400, 403, 404 and (without TokenFunc) 401 end Run with a
// *StatusError.
//
// # Built on r3labs/sse, with a wrapper
//
// The SSE reading is r3labs/sse/v2's Client (v2.10.0, its last release).
// What it lacks is wrapped here:
//
//   - Line ends. The spec ends a line at CR, LF or CRLF. r3labs cuts
//     events at "\n\n", "\r\r", "\r\n\r\n", "\r\n\n" and "\n\r\n" only, so
//     a blank line ended by a bare CR after an LF or CRLF line
//     ("data: a\n\r") does not end the event and two events merge. The
//     client hands r3labs, through its ResponseValidator hook, a body in
//     which every CRLF and bare CR is LF (and a leading BOM, which r3labs
//     would glue to the first field name, is dropped). presenced itself
//     never sends a bare CR (it splits data at every line break and
//     encoding/json escapes CR inside strings), so this matters for
//     proxies and other servers; a CR in a display name reaches the view
//     intact either way.
//   - Reconnects. r3labs' retry loop stops for good when a server ends a
//     stream cleanly (what a gateway does on shutdown and on token
//     expiry) and does not watch the context while it waits; each attempt
//     here is one r3labs subscription with StopBackOff, in this package's
//     own loop.
//   - Size. r3labs reads at most 64 KiB per event by default; the sync of
//     a big room is more. MaxEventSize (default 8 MiB) raises it.
//   - Dead connections. r3labs has no read timeout; IdleTimeout closes a
//     stream that sent nothing, not even the gateway's keep-alive comment.
//   - Last-Event-ID. A fresh r3labs client per attempt sends none: the
//     gateway's ids count per connection and the sync replaces replay.
//
// The view (Room, Users) already includes an event when it is delivered,
// and may include later ones by the time it is read.
package client
