package client

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdle is the cause of a reconnect when the stream sent nothing (not
// even a keep-alive comment) for Config.IdleTimeout: the connection is
// presumed dead (a half-open TCP connection is otherwise only noticed on a
// failed write, which a reader never makes).
var ErrIdle = errors.New("client: stream idle for longer than IdleTimeout")

// lineReader is what this package puts between the HTTP body and r3labs'
// EventStreamReader. r3labs cuts events at "\n\n", "\r\r", "\r\n\r\n",
// "\r\n\n" and "\n\r\n" only, so an LF-terminated line followed by a blank
// line ended by a bare CR ("data: a\n\r") or a CRLF line followed by a CR
// blank line ("data: a\r\n\r") does not end the event, and two events
// merge into one. The WHATWG rules say CR, LF and CRLF each end a line, and
// the parsed result does not depend on which one was used; lineReader
// rewrites every CRLF and every bare CR to LF, which r3labs handles right.
// It also drops a leading U+FEFF (the spec ignores one BOM at the start of
// the stream; r3labs would glue it to the first field name) and closes the
// body when nothing arrives for idle (ErrIdle).
type lineReader struct {
	body    io.ReadCloser
	buf     []byte // what was read from body
	out     []byte // buf normalised
	pending []byte // the part of out not yet returned
	err     error  // the body's error, returned once pending is empty
	crLast  bool   // the last byte seen was CR: an LF right after it is dropped
	bomSeen int    // leading bytes matching the BOM so far; -1 once past it

	idle    time.Duration
	timer   *time.Timer
	idled   atomic.Bool
	closeMu sync.Once
}

func newLineReader(body io.ReadCloser, idle time.Duration) *lineReader {
	lr := &lineReader{body: body, idle: idle}
	if idle > 0 {
		lr.timer = time.AfterFunc(idle, func() {
			lr.idled.Store(true)
			lr.closeBody()
		})
	}
	return lr
}

const bom = "\uFEFF" // EF BB BF

func (lr *lineReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(lr.pending) == 0 {
		if lr.err != nil {
			return 0, lr.err
		}
		if cap(lr.buf) < len(p) {
			lr.buf = make([]byte, len(p))
		}
		n, err := lr.body.Read(lr.buf[:len(p)])
		if n > 0 && lr.timer != nil {
			lr.timer.Reset(lr.idle)
		}
		lr.out = lr.normalise(lr.out[:0], lr.buf[:n])
		if err != nil {
			if lr.idled.Load() {
				err = ErrIdle
			}
			if lr.bomSeen > 0 { // a stream cut inside what looked like a BOM
				lr.out = append(lr.out, bom[:lr.bomSeen]...)
			}
			lr.bomSeen = -1
			lr.err = err
		}
		lr.pending = lr.out
	}
	n := copy(p, lr.pending)
	lr.pending = lr.pending[n:]
	return n, nil
}

// normalise appends b to out with every CRLF and bare CR made LF and a
// leading BOM dropped.
func (lr *lineReader) normalise(out, b []byte) []byte {
	for _, c := range b {
		if lr.bomSeen >= 0 {
			if c == bom[lr.bomSeen] {
				if lr.bomSeen++; lr.bomSeen == len(bom) {
					lr.bomSeen = -1
				}
				continue
			}
			out = append(out, bom[:lr.bomSeen]...) // not a BOM after all
			lr.bomSeen = -1
		}
		switch {
		case c == '\n' && lr.crLast:
			lr.crLast = false // the LF of a CRLF, already written
		case c == '\r':
			out = append(out, '\n')
			lr.crLast = true
		default:
			out = append(out, c)
			lr.crLast = false
		}
	}
	return out
}

func (lr *lineReader) closeBody() {
	lr.closeMu.Do(func() { _ = lr.body.Close() })
}

func (lr *lineReader) Close() error {
	if lr.timer != nil {
		lr.timer.Stop()
	}
	lr.closeBody()
	return nil
}
