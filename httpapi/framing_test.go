package httpapi

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestFraming feeds request streams to the framing reader, whole and cut at
// every byte, and checks the verdict of each request head.
func TestFraming(t *testing.T) {
	const fakeHead = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"
	for _, tc := range []struct {
		name   string
		stream string
		want   []bool
	}{
		{"no body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []bool{false}},
		{"content-length", "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}},
		{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n" + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}},
		{"both", "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}},
		{"both, any case", "POST / HTTP/1.1\r\ncontent-LENGTH: 4\r\nTRANSFER-encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}},
		{"both, then a smuggled request in the chunked body's place", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n", []bool{true, false}},
		{"body that looks like a request", "POST / HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(fakeHead)) + "\r\n\r\n" + fakeHead + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}},
		{"bare LF", "POST / HTTP/1.1\nContent-Length: 1\n\nx" + "GET / HTTP/1.1\n\n", []bool{false, false}},
		{"HTTP/1.0 goes by its Content-Length", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc" + "GET / HTTP/1.0\r\n\r\n", []bool{true, false}},
		{"long header lines", "GET / HTTP/1.1\r\nCookie: " + strings.Repeat("c", 5000) + "\r\n\r\n" + "GET / HTTP/1.1\r\n\r\n", []bool{false, false}},
		{"bad length stops judging", "POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := range len(tc.stream) + 1 {
				f := &framing{}
				f.feed([]byte(tc.stream[:cut]))
				f.feed([]byte(tc.stream[cut:]))
				if !slices.Equal(f.verdicts, tc.want) {
					t.Fatalf("cut at %d: verdicts %v, want %v", cut, f.verdicts, tc.want)
				}
			}
			f := &framing{}
			for i := range len(tc.stream) {
				f.feed([]byte{tc.stream[i]})
			}
			if !slices.Equal(f.verdicts, tc.want) {
				t.Fatalf("a byte at a time: verdicts %v, want %v", f.verdicts, tc.want)
			}
		})
	}
}
