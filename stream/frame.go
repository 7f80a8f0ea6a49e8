package stream

import (
	"bytes"

	"github.com/sselog/sselog/store"
)

// AppendFrame appends the SSE frame of one event to b: an "id:" line, an
// "event:" line when typ is not empty, one "data:" line per line of data
// (lines end at CR, LF or CRLF, as a WHATWG parser splits them), and the
// blank line that dispatches the event.
//
// typ must already satisfy store.ValidateType; data needs no escaping,
// because splitting it into data lines is exactly what the client undoes.
func AppendFrame(b []byte, id store.ID, typ string, data []byte) []byte {
	b = append(b, "id: "...)
	b = id.AppendText(b)
	b = append(b, '\n')
	if typ != "" {
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, '\n')
	}
	for {
		i := indexLineEnd(data)
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			b = append(b, '\n')
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n')
}

// indexLineEnd finds the first CR or LF. Two SIMD scans beat one bytewise
// loop for the usual event, which has neither.
func indexLineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	head := b
	if n >= 0 {
		head = b[:n]
	}
	if r := bytes.IndexByte(head, '\r'); r >= 0 {
		return r
	}
	return n
}
