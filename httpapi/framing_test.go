package httpapi

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestFraming feeds request streams to the framing reader, whole and cut at
// every byte, and checks the verdict of each request head.
func TestFraming(t *testing.T) {
	const smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	const fakeHead = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"
	for _, tc := range []struct {
		name   string
		stream string
		want   []bool
		// lost: the reader lost track, and refuses what follows.
		lost bool
	}{
		{"no body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []bool{false}, false},
		{"content-length", "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}, false},
		{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n" + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}, false},
		{"both", "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}, false},
		{"both, any case", "POST / HTTP/1.1\r\ncontent-LENGTH: 4\r\nTRANSFER-encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}, false},
		{"both, then a smuggled request in the chunked body's place", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n", []bool{true, false}, false},
		{"body that looks like a request", "POST / HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(fakeHead)) + "\r\n\r\n" + fakeHead + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}, false},
		{"bare LF", "POST / HTTP/1.1\nContent-Length: 1\n\nx" + "GET / HTTP/1.1\n\n", []bool{false, false}, false},
		{"HTTP/1.0 goes by its Content-Length", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc" + "GET / HTTP/1.0\r\n\r\n", []bool{true, false}, false},
		{"long header lines", "GET / HTTP/1.1\r\nCookie: " + strings.Repeat("c", 5000) + "\r\n\r\n" + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}, false},
		{"bad length: lost", "POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n", nil, true},
		// What a reviewer sent to lose the reader before a smuggled
		// request, all accepted by net/http.
		{"19-digit length: lost", "POST / HTTP/1.1\r\nContent-Length: 0000000000000000002\r\n\r\nab" + smuggled, nil, true},
		{"length after 130 spaces: lost", "POST / HTTP/1.1\r\nContent-Length:" + strings.Repeat(" ", 130) + "2\r\n\r\nab" + smuggled, nil, true},
		{"16 hex digits of chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000002\r\nab\r\n0\r\n\r\n" + smuggled, []bool{false, true}, false},
		{"long chunk extension", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;" + strings.Repeat("e", 140) + "\r\nab\r\n0\r\n\r\n" + smuggled, []bool{false, true}, false},
		{"long HTTP/1.0 request line", "POST /" + strings.Repeat("p", 200) + " HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled, []bool{false, true}, false},
		{"unknown version: lost", "GET / HTTP/1.7\r\n\r\n", []bool{false}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, f *framing) {
				t.Helper()
				if !slices.Equal(f.verdicts, tc.want) {
					t.Fatalf("%s: verdicts %v, want %v", how, f.verdicts, tc.want)
				}
				for range tc.want {
					f.next()
				}
				if got := f.next(); got != tc.lost {
					t.Fatalf("%s: a request after these refused: %v, want %v", how, got, tc.lost)
				}
			}
			for cut := range len(tc.stream) + 1 {
				f := &framing{}
				f.feed([]byte(tc.stream[:cut]))
				f.feed([]byte(tc.stream[cut:]))
				check(fmt.Sprintf("cut at %d", cut), f)
			}
			f := &framing{}
			for i := range len(tc.stream) {
				f.feed([]byte{tc.stream[i]})
			}
			check("a byte at a time", f)
		})
	}
}
