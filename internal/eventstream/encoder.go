// Package eventstream writes and reads the text/event-stream wire format
// (WHATWG HTML, "Server-sent events"). The gateway writes every SSE field
// through Encoder, which cannot be made to emit a line break from data: that
// is what keeps a display name such as "M\revent: x" from starting a new
// field in someone else's stream (a bare CR ends a line for every
// spec-following parser, and neither templ nor encoding/json escapes it in
// HTML). Parser is a spec-conforming reader used by the tests, the load tool
// and the fuzz target.
package eventstream

import (
	"bytes"
	"errors"
	"strconv"
	"unicode/utf8"
)

// MaxEventName bounds an event name ("presence-" + a 128-character user id
// is the longest the gateway sends).
const MaxEventName = 256

// ErrEventName is returned for an event name the wire format cannot carry
// as one field: empty, too long, not UTF-8, or holding CR, LF or NUL.
var ErrEventName = errors.New("eventstream: invalid event name")

// ValidEventName reports whether name can be written as an event field.
func ValidEventName(name string) bool {
	if name == "" || len(name) > MaxEventName || !utf8.ValidString(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '\r', '\n', 0:
			return false
		}
	}
	return true
}

// AppendEvent appends one event to buf: an id field (when id > 0), the
// event field, and the data split into data fields at every CR, LF and CRLF,
// so that the parser's reassembled data equals data with its line breaks
// normalised to LF. A NUL byte and invalid UTF-8 become U+FFFD (a parser
// decodes the stream as UTF-8 and would do the same, but NUL is a common
// truncation point in clients). U+2028 and U+2029 are not line breaks in
// this format and pass through (json.Marshal escapes them in JSON payloads).
// Empty data is sent as one empty data field: an event without data is
// never dispatched by a parser.
func AppendEvent(buf []byte, id uint64, event string, data []byte) ([]byte, error) {
	if !ValidEventName(event) {
		return buf, ErrEventName
	}
	if id > 0 {
		buf = append(buf, "id: "...)
		buf = strconv.AppendUint(buf, id, 10)
		buf = append(buf, '\n')
	}
	buf = append(buf, "event: "...)
	buf = append(buf, event...)
	buf = append(buf, '\n')
	buf = appendField(buf, "data: ", data)
	return append(buf, '\n'), nil
}

// AppendComment appends a comment line (": text") and the blank line after
// it, with text made safe the same way as data: each line of text becomes
// its own comment line.
func AppendComment(buf []byte, text string) []byte {
	buf = appendField(buf, ": ", []byte(text))
	return append(buf, '\n')
}

// AppendRetry appends a retry field (the reconnection time in ms).
func AppendRetry(buf []byte, ms int) []byte {
	buf = append(buf, "retry: "...)
	buf = strconv.AppendInt(buf, int64(max(ms, 0)), 10)
	return append(buf, "\n\n"...)
}

// appendField writes data as one or more lines, each starting with prefix.
func appendField(buf []byte, prefix string, data []byte) []byte {
	buf = append(buf, prefix...)
	// Fast path, the common case (a rendered fragment, a JSON body): one
	// line of valid UTF-8 without NUL is copied as it is.
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 && bytes.IndexByte(data, 0) < 0 && utf8.Valid(data) {
		buf = append(buf, data...)
		return append(buf, '\n')
	}
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			buf = append(buf, '\n')
			buf = append(buf, prefix...)
			i++
		case c == '\n':
			buf = append(buf, '\n')
			buf = append(buf, prefix...)
			i++
		case c == 0:
			buf = append(buf, "\uFFFD"...)
			i++
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			i++
		default:
			r, n := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n <= 1 {
				buf = append(buf, "\uFFFD"...)
			} else {
				buf = append(buf, data[i:i+n]...)
			}
			i += n
		}
	}
	return append(buf, '\n')
}
