package stream_test

import (
	"bytes"
	"strings"

	"github.com/sselog/sselog/internal/testkit"
)

// sseEvent is one event as a browser's EventSource would dispatch it.
type sseEvent = testkit.SSEEvent

// parseSSE interprets b the way the WHATWG "event stream interpretation"
// rules do, independently of how AppendFrame writes, so that a frame that
// only looks right to its own encoder fails here. It returns the dispatched
// events, the last "retry" value and how many comment lines it met. Like a
// browser, it drops an event the stream ends in the middle of.
func parseSSE(b []byte) (events []sseEvent, retry string, comments int) {
	var (
		lastID string
		typ    string
		data   strings.Builder
	)
	for {
		line, rest, ok := cutLine(b)
		if !ok {
			// An unterminated last line is not a line yet.
			return events, retry, comments
		}
		b = rest
		if len(line) == 0 {
			// Dispatch. An event without any data line is not dispatched;
			// the buffer keeps one LF per data line, the last of which goes.
			if data.Len() > 0 {
				d := strings.TrimSuffix(data.String(), "\n")
				t := typ
				if t == "" {
					t = "message"
				}
				events = append(events, sseEvent{ID: lastID, Type: t, Data: d})
			}
			data.Reset()
			typ = ""
			continue
		}
		if line[0] == ':' {
			comments++
			continue
		}
		field, value := string(line), ""
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field = string(line[:i])
			value = string(line[i+1:])
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "event":
			typ = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.ContainsRune(value, 0) {
				lastID = value
			}
		case "retry":
			if value != "" && strings.Trim(value, "0123456789") == "" {
				retry = value
			}
		}
	}
}

// cutLine splits off the first line of b, which ends at CRLF, LF or CR.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexAny(b, "\r\n")
	if i < 0 {
		return nil, b, false
	}
	if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
		return b[:i], b[i+2:], true
	}
	return b[:i], b[i+1:], true
}

// normalizeNewlines maps CRLF and CR to LF, which is what a client sees of
// a multi-line payload.
func normalizeNewlines(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
