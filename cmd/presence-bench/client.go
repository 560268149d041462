package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presenced/presenced/internal/eventstream"
)

// mintToken signs an HS256 token as the gateway expects (sub, name, exp).
func mintToken(secret, sub, name string, ttl time.Duration) string {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "name": name, "exp": time.Now().Add(ttl).Unix(),
	})
	s, err := t.SignedString([]byte(secret))
	if err != nil {
		panic(err)
	}
	return s
}

// srcIP returns the i-th loopback source address: 127.0.0.2, 127.0.0.3, …
// (each gives ~28k ephemeral ports toward one gateway port).
func srcIP(i, n int) net.IP {
	if n <= 0 {
		return nil
	}
	k := i % n
	return net.IPv4(127, 0, byte(k/250), byte(2+k%250))
}

// counted counts the bytes a connection moves (application payload: HTTP
// headers, bodies, chunk framing; not TCP/IP headers).
type counted struct {
	net.Conn
	rd, wr *atomic.Int64
}

func (c counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rd.Add(int64(n))
	return n, err
}

func (c counted) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.wr.Add(int64(n))
	return n, err
}

func dial(ctx context.Context, addr string, src net.IP) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// ---- a minimal keep-alive HTTP/1.1 client (one connection, one request at
// a time): cheap enough that the client does not eat the gateway's CPU.

type httpConn struct {
	addr  string
	src   net.IP
	c     net.Conn
	br    *bufio.Reader
	rd    *atomic.Int64
	wr    *atomic.Int64
	buf   []byte
	reuse int
}

func newHTTPConn(addr string, src net.IP, rd, wr *atomic.Int64) *httpConn {
	if rd == nil {
		rd = new(atomic.Int64)
	}
	if wr == nil {
		wr = new(atomic.Int64)
	}
	return &httpConn{addr: addr, src: src, rd: rd, wr: wr}
}

func (h *httpConn) close() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

// buildRequest serializes one request.
func buildRequest(method, host, path, token string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: presence-bench\r\n", method, path, host)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// do sends one prebuilt request and reads the whole response. It returns the
// status and the body (valid until the next call).
func (h *httpConn) do(req []byte, timeout time.Duration) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		if h.c == nil {
			c, err := dial(context.Background(), h.addr, h.src)
			if err != nil {
				return 0, nil, err
			}
			h.c = counted{Conn: c, rd: h.rd, wr: h.wr}
			h.br = bufio.NewReaderSize(h.c, 8192)
			h.reuse = 0
		}
		_ = h.c.SetDeadline(time.Now().Add(timeout))
		code, body, err := h.roundTrip(req)
		if err == nil {
			h.reuse++
			return code, body, nil
		}
		fresh := h.reuse == 0
		h.close()
		if fresh || attempt > 0 {
			return 0, nil, err
		}
		// A kept-alive connection the server had closed: retry once.
	}
}

func (h *httpConn) roundTrip(req []byte) (int, []byte, error) {
	if _, err := h.c.Write(req); err != nil {
		return 0, nil, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	code, _ := strconv.Atoi(string(line[9:12]))
	cl, chunked, closeAfter := -1, false, false
	for {
		l, err := h.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		if len(l) <= 2 {
			break
		}
		k, v, _ := bytes.Cut(bytes.TrimRight(l, "\r\n"), []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			cl, _ = strconv.Atoi(string(v))
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closeAfter = bytes.EqualFold(v, []byte("close"))
		}
	}
	h.buf = h.buf[:0]
	switch {
	case chunked:
		b, err := io.ReadAll(newChunked(h.br))
		if err != nil {
			return 0, nil, err
		}
		h.buf = b
	case cl >= 0:
		if cap(h.buf) < cl {
			h.buf = make([]byte, cl)
		}
		h.buf = h.buf[:cl]
		if _, err := io.ReadFull(h.br, h.buf); err != nil {
			return 0, nil, err
		}
	}
	if closeAfter {
		h.close()
	}
	return code, h.buf, nil
}

// ---- SSE streams

// sseEvent is one event as received.
type sseEvent struct {
	name string
	data []byte
	at   time.Time // when its last line was read
}

// sseStream is one open text/event-stream response, read with the
// project's spec parser (internal/eventstream: lines end at CR, LF or CRLF,
// as in every browser), so that the load tool sees exactly the events a
// browser would.
type sseStream struct {
	c     net.Conn
	p     *eventstream.Parser
	Bytes *atomic.Int64
}

// openSSE opens GET path as an event stream; on success the stream's first
// bytes (the status and headers) have been read.
func openSSE(ctx context.Context, addr string, src net.IP, path, token string, rd, wr *atomic.Int64) (*sseStream, error) {
	c, err := dial(ctx, addr, src)
	if err != nil {
		return nil, err
	}
	if rd == nil {
		rd = new(atomic.Int64)
	}
	if wr == nil {
		wr = new(atomic.Int64)
	}
	cc := counted{Conn: c, rd: rd, wr: wr}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nAuthorization: Bearer %s\r\n\r\n", path, addr, token)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := cc.Write([]byte(req)); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(cc, 2048)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		c.Close()
		return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	_ = c.SetDeadline(time.Time{})
	// Cancelling ctx closes the stream (a blocked read returns).
	context.AfterFunc(ctx, func() { c.Close() })
	return &sseStream{c: c, p: eventstream.NewParser(resp.Body), Bytes: rd}, nil
}

func (s *sseStream) close() { s.c.Close() }

// setIdleTimeout makes a read fail when nothing (not even a keep-alive)
// arrived for d.
func (s *sseStream) setIdleTimeout(d time.Duration) {
	if d > 0 {
		_ = s.c.SetReadDeadline(time.Now().Add(d))
	}
}

// next reads the next event; comments (keep-alives) are reported as an
// event named ":".
func (s *sseStream) next(idle time.Duration) (sseEvent, error) {
	s.setIdleTimeout(idle)
	ev, err := s.p.Next()
	if err != nil {
		return sseEvent{}, err
	}
	if ev.IsComment() {
		return sseEvent{name: ":", at: time.Now()}, nil
	}
	return sseEvent{name: ev.Type, data: []byte(ev.Data), at: time.Now()}, nil
}

// ---- chunked transfer decoding (small, allocation-free per chunk)

type chunked struct {
	r    *bufio.Reader
	left int
	eof  bool
}

func newChunked(r *bufio.Reader) *chunked { return &chunked{r: r} }

func (c *chunked) Read(p []byte) (int, error) {
	if c.eof {
		return 0, io.EOF
	}
	if c.left == 0 {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(line), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			// trailer
			for {
				l, err := c.r.ReadSlice('\n')
				if err != nil || len(l) <= 2 {
					break
				}
			}
			c.eof = true
			return 0, io.EOF
		}
		c.left = int(n)
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	if c.left == 0 && err == nil {
		if _, err := c.r.Discard(2); err != nil {
			return n, err
		}
	}
	return n, err
}

// q escapes a query value.
func q(s string) string { return url.QueryEscape(s) }
