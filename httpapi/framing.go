package httpapi

import (
	"bytes"
	"sync"
)

// framing follows the HTTP/1.x message framing of the bytes a connection
// reads, as net/http will parse them, only to tell for each request
// whether its head carried both Content-Length and Transfer-Encoding.
//
// net/http serves such a request by the Transfer-Encoding and deletes the
// Content-Length before the handler sees it, and keeps the connection
// open. RFC 9112 6.1 says a server that serves it must close the
// connection afterwards: a proxy in front that went by the Content-Length
// has framed the bytes after it differently (request smuggling). The
// handler cannot see the header any more, so this reader does, by
// following the heads, the bodies (by Content-Length or chunked) and the
// trailers as net/http does. Where the two could disagree the input is
// malformed, and net/http refuses it and closes the connection.
type framing struct {
	mu       sync.Mutex
	verdicts []bool // one per request head read and not yet taken

	state   int
	line    []byte // the current line, up to maxFramingLine bytes
	long    bool   // the current line was longer than that
	end     []byte // the last bytes of the current line (for the version)
	version string // of the current request
	hasCL   bool
	hasTE   bool
	cl      int64
	left    int64 // body bytes (or chunk bytes) still to come
}

const (
	stateRequestLine = iota
	stateHeader
	stateBody      // left bytes of a body with Content-Length
	stateChunkSize // a chunk's size line
	stateChunkData // left bytes of a chunk
	stateChunkEnd  // the CRLF after a chunk's data
	stateTrailer
	stateLost // framing no longer known: nothing more is judged
)

// maxFramingLine is as much of a line as is kept: enough for the header
// names and the numbers that decide framing.
const maxFramingLine = 128

// maxVersion is enough of the end of a request line for its version.
const maxVersion = 16

// next takes the verdict of the oldest request head not yet taken. Once
// the framing is lost, every request without a verdict is refused: a
// reader that has lost track can no longer vouch for any request, and
// letting them through would let one odd request open the way for a
// smuggled one.
func (f *framing) next() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.verdicts) == 0 {
		return f.state == stateLost
	}
	v := f.verdicts[0]
	f.verdicts = f.verdicts[1:]
	return v
}

func (f *framing) feed(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(b) > 0 && f.state != stateLost {
		switch f.state {
		case stateBody, stateChunkData:
			n := int64(len(b))
			if n > f.left {
				n = f.left
			}
			f.left -= n
			b = b[n:]
			if f.left == 0 {
				if f.state == stateBody {
					f.state = stateRequestLine
				} else {
					f.state = stateChunkEnd
				}
			}
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			f.keep(b)
			return
		}
		f.keep(b[:i])
		b = b[i+1:]
		line := bytes.TrimSuffix(f.line, []byte("\r"))
		f.endLine(line, f.long)
		f.line, f.long, f.end = f.line[:0], false, f.end[:0]
	}
}

func (f *framing) keep(b []byte) {
	if f.state == stateRequestLine {
		// The version ends the request line, however long the target.
		f.end = append(f.end, b[max(0, len(b)-maxVersion):]...)
		f.end = f.end[max(0, len(f.end)-maxVersion):]
	}
	room := maxFramingLine - len(f.line)
	if len(b) > room {
		b, f.long = b[:room], true
	}
	f.line = append(f.line, b...)
}

func (f *framing) endLine(line []byte, long bool) {
	switch f.state {
	case stateRequestLine:
		if len(line) == 0 {
			return // blank lines before a request are skipped
		}
		end := bytes.TrimSuffix(f.end, []byte("\r"))
		f.version = ""
		if i := bytes.LastIndexByte(end, ' '); i >= 0 {
			f.version = string(end[i+1:])
		}
		f.hasCL, f.hasTE, f.cl = false, false, 0
		f.state = stateHeader
	case stateHeader:
		if len(line) == 0 {
			f.endHead()
			return
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			f.hasCL = true
			n, ok := parseLength(value, long)
			if !ok {
				// net/http refuses the request.
				f.state = stateLost
				return
			}
			f.cl = n
		case asciiEqualFold(name, "transfer-encoding"):
			f.hasTE = true
		}
	case stateChunkSize:
		size := line
		if i := bytes.IndexByte(size, ';'); i >= 0 {
			// A long extension does not matter; a long size does.
			size, long = size[:i], false
		}
		n, ok := parseHex(bytes.TrimSpace(size), long)
		if !ok {
			f.state = stateLost
			return
		}
		if n == 0 {
			f.state = stateTrailer
			return
		}
		f.left, f.state = n, stateChunkData
	case stateChunkEnd:
		f.state = stateChunkSize
	case stateTrailer:
		if len(line) == 0 {
			f.state = stateRequestLine
		}
	}
}

// endHead records the verdict of a request head and follows its body.
func (f *framing) endHead() {
	f.verdicts = append(f.verdicts, f.hasCL && f.hasTE)
	// net/http ignores Transfer-Encoding in HTTP/1.0, and serves a
	// request with both by its Transfer-Encoding otherwise.
	switch {
	case f.version != "HTTP/1.1" && f.version != "HTTP/1.0":
		// net/http answers anything else with an error and closes.
		f.state = stateLost
	case f.hasTE && f.version != "HTTP/1.0":
		f.state = stateChunkSize
	case f.cl > 0:
		f.left, f.state = f.cl, stateBody
	default:
		f.state = stateRequestLine
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func parseLength(b []byte, long bool) (int64, bool) {
	if long || len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func parseHex(b []byte, long bool) (int64, bool) {
	// net/http takes up to 16 hex digits, leading zeros included.
	if long || len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	for len(b) > 1 && b[0] == '0' {
		b = b[1:]
	}
	if len(b) > 15 {
		return 0, false // over 2^60: net/http could not read it either
	}
	var n int64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}
