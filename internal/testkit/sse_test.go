package testkit_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sselog/sselog/internal/testkit"
)

func reader(wire string) *testkit.SSEReader {
	return testkit.NewSSEReader(&http.Response{Body: io.NopCloser(strings.NewReader(wire))}, nil)
}

// TestSSEReaderEvents: heartbeats and retry hints are skipped, a missing
// type reads as "message", data lines join with LF and CRLF line ends are
// tolerated.
func TestSSEReaderEvents(t *testing.T) {
	r := reader("retry: 1000\n\n:\n\nid: 1\ndata: a\r\ndata: b\n\nid: 2\nevent: reset\ndata:c\n\n")
	want := []testkit.SSEEvent{{ID: "1", Type: "message", Data: "a\nb"}, {ID: "2", Type: "reset", Data: "c"}}
	for i, w := range want {
		got, err := r.NextEvent()
		if err != nil || got != w {
			t.Fatalf("event %d: %+v, %v; want %+v", i, got, err, w)
		}
	}
}

// TestSSEReaderEnd: a stream that ends at a line boundary is ErrEnded,
// which is both io.EOF and io.ErrUnexpectedEOF; one cut inside a line is
// io.ErrUnexpectedEOF only.
func TestSSEReaderEnd(t *testing.T) {
	for _, tc := range []struct {
		name, wire string
		eof        bool
	}{
		{"at a block boundary", "id: 1\ndata: a\n\n", true},
		{"inside a line", "id: 1\ndata: a\n\nid: 2\nda", false},
		{"inside a block, at a line boundary", "id: 1\ndata: a\n\nid: 2\ndata: half\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reader(tc.wire)
			if _, err := r.NextEvent(); err != nil {
				t.Fatal(err)
			}
			_, err := r.Next()
			if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) != tc.eof {
				t.Fatalf("end: %v; want ErrUnexpectedEOF, and io.EOF %v", err, tc.eof)
			}
		})
	}
}

// TestSSEReaderStrict: what this server never sends is an error, not
// skipped as a browser would.
func TestSSEReaderStrict(t *testing.T) {
	for _, tc := range []struct{ name, wire string }{
		{"unknown field", "id: 1\nfoo: x\ndata: a\n\n"},
		{"event without id", "data: a\n\n"},
		{"id without data", "id: 1\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ev, err := reader(tc.wire).NextEvent(); err == nil {
				t.Fatalf("read %+v from %q, want an error", ev, tc.wire)
			}
		})
	}
}
