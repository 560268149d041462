package eventstream

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
)

// Event is one dispatched event, as the WHATWG "event stream
// interpretation" defines it. Comments are reported too (Comment set, the
// other fields empty), since the tests count keep-alives.
type Event struct {
	ID      string // the last event ID buffer after this event
	Type    string // "message" when no event field was given
	Data    string
	Comment string
	// Retry is the reconnection time set by a retry field seen since the
	// previous event (0: none).
	Retry int
}

// IsComment reports whether e is a comment rather than an event.
func (e Event) IsComment() bool { return e.Type == "" }

// Parser reads events from a stream. It follows the spec exactly: lines end
// at CRLF, LF or CR; a leading BOM is skipped; "field: value" drops one
// leading space of the value; data lines are joined with LF and the final LF
// removed; an event with an empty data buffer is not dispatched; an id with
// NUL is ignored; retry takes ASCII digits only; unknown fields are ignored.
type Parser struct {
	r       *bufio.Reader
	started bool
	lastID  string
	retry   int
	// The event being built.
	data    strings.Builder
	hasData bool
	evType  string
}

// NewParser reads from r.
func NewParser(r io.Reader) *Parser { return &Parser{r: bufio.NewReaderSize(r, 64<<10)} }

// readLine returns one line without its terminator (CR, LF or CRLF).
func (p *Parser) readLine() (string, error) {
	var b []byte
	for {
		c, err := p.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				// A line without its terminator at the end of the stream is
				// not a complete line: the spec discards it.
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		switch c {
		case '\n':
			return string(b), nil
		case '\r':
			if n, err := p.r.Peek(1); err == nil && n[0] == '\n' {
				_, _ = p.r.ReadByte()
			}
			return string(b), nil
		}
		b = append(b, c)
	}
}

// Next returns the next event or comment. At the end of the stream it
// returns io.EOF (an event not terminated by a blank line is discarded, as
// the spec says).
func (p *Parser) Next() (Event, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			return Event{}, err
		}
		if !p.started {
			p.started = true
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		if line == "" {
			if !p.hasData {
				p.evType = ""
				p.data.Reset()
				continue
			}
			ev := Event{ID: p.lastID, Type: p.evType, Data: p.data.String(), Retry: p.retry}
			if ev.Type == "" {
				ev.Type = "message"
			}
			p.data.Reset()
			p.hasData, p.evType, p.retry = false, "", 0
			return ev, nil
		}
		if line[0] == ':' {
			return Event{Comment: strings.TrimPrefix(line[1:], " ")}, nil
		}
		field, value := line, ""
		if i := strings.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], strings.TrimPrefix(line[i+1:], " ")
		}
		switch field {
		case "event":
			p.evType = value
		case "data":
			if p.hasData {
				p.data.WriteByte('\n')
			}
			p.data.WriteString(value)
			p.hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				p.lastID = value
			}
		case "retry":
			if value != "" && strings.Trim(value, "0123456789") == "" {
				if n, err := strconv.Atoi(value); err == nil {
					p.retry = n
				}
			}
		}
	}
}

// ParseAll parses a whole stream (tests).
func ParseAll(b []byte) ([]Event, error) {
	p := NewParser(bytes.NewReader(b))
	var out []Event
	for {
		ev, err := p.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}
