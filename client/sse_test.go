package client

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// parseAll reads every event of input, and what the stream said besides.
func parseAll(r io.Reader) (events []sseEvent, retry time.Duration, hasRetry bool, comments int, err error) {
	p := newSSEParser(r)
	for {
		ev, err := p.next()
		if err != nil {
			return events, p.retry, p.hasRetry, p.comments, err
		}
		events = append(events, ev)
	}
}

// lastEventID reads input to its end and returns the parser's last event
// id: what a reconnection would send.
func lastEventID(r io.Reader) string {
	p := newSSEParser(r)
	for {
		if _, err := p.next(); err != nil {
			return p.lastID
		}
	}
}

// goldenFrames are the server's frames in testdata/frames (written by
// stream.AppendFrame, see stream/frame_test.go) with the event each one
// must read as: the data's CR, LF and CRLF line ends all read as LF.
var goldenFrames = []struct {
	name, typ, data string
}{
	{"no_type", "", `{"a":1}`},
	{"with_type", "update", `{"a":1}`},
	{"unicode_type", "größe.änderung", `"x"`},
	{"lf", "", "one\ntwo\nthree"},
	{"cr", "", "one\ntwo\nthree"},
	{"crlf", "", "one\ntwo\nthree"},
	{"mixed", "", "a\nb\nc\nd\n\ne\n\nf"},
	{"trailing_lf", "", "line\n"},
	{"trailing_cr", "", "line\n"},
	{"trailing_crlf", "", "line\n"},
	{"only_newline", "", "\n"},
	{"empty_lines", "", "\n\nmiddle\n\n"},
	{"leading_space", "", " one\n  two"},
	{"looks_like_fields", "", "data: x\nid: 0\nevent: evil\n: comment\nretry: 1"},
	{"empty", "", ""},
}

// TestParseGoldenFrames: each of the server's golden frames reads as
// exactly its event, whole and byte by byte.
func TestParseGoldenFrames(t *testing.T) {
	const id = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	for _, tc := range goldenFrames {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "testdata", "frames", tc.name+".golden"))
			if err != nil {
				t.Fatal(err)
			}
			want := sseEvent{id: id, typ: tc.typ, data: []byte(tc.data)}
			if want.typ == "" {
				want.typ = "message"
			}
			for _, r := range []io.Reader{bytes.NewReader(b), iotest.OneByteReader(bytes.NewReader(b))} {
				events, _, _, _, err := parseAll(r)
				if !errors.Is(err, io.EOF) || len(events) != 1 || !sameEvent(events[0], want) {
					t.Fatalf("%q reads as %+v (%v), want %+v", b, events, err, want)
				}
			}
		})
	}
}

// TestParseRules: the WHATWG rules, one at a time.
func TestParseRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wire     string
		want     []sseEvent
		retry    time.Duration // 0: none
		comments int
	}{
		{"byte order mark", "\xEF\xBB\xBFid: 1\ndata: a\n\n", []sseEvent{{"1", "message", []byte("a")}}, 0, 0},
		{"a second byte order mark is part of the field name", "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n", []sseEvent{{"", "message", []byte("b")}}, 0, 0},
		{"CR line ends", "id: 1\rdata: a\rdata: b\r\r", []sseEvent{{"1", "message", []byte("a\nb")}}, 0, 0},
		{"CRLF line ends", "id: 1\r\ndata: a\r\n\r\n", []sseEvent{{"1", "message", []byte("a")}}, 0, 0},
		{"CR then LF is one line end, LF then CR two", "data: a\n\rdata: b\r\n\n", []sseEvent{{"", "message", []byte("a")}, {"", "message", []byte("b")}}, 0, 0},
		{"one leading space is dropped, not two", "data:  a\ndata:b\n\n", []sseEvent{{"", "message", []byte(" a\nb")}}, 0, 0},
		{"a field without a colon has an empty value", "data\ndata\n\n", []sseEvent{{"", "message", []byte("\n")}}, 0, 0},
		{"an empty data line dispatches", "data:\n\n", []sseEvent{{"", "message", []byte("")}}, 0, 0},
		{"a block without data dispatches nothing", "id: 1\nevent: x\n\ndata: a\n\n", []sseEvent{{"1", "message", []byte("a")}}, 0, 0},
		{"the id persists", "id: 1\ndata: a\n\ndata: b\n\n", []sseEvent{{"1", "message", []byte("a")}, {"1", "message", []byte("b")}}, 0, 0},
		{"an empty id clears it", "id: 1\ndata: a\n\nid\ndata: b\n\n", []sseEvent{{"1", "message", []byte("a")}, {"", "message", []byte("b")}}, 0, 0},
		{"an id with NUL is ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", []sseEvent{{"1", "message", []byte("a")}, {"1", "message", []byte("b")}}, 0, 0},
		{"the type does not persist", "event: x\ndata: a\n\ndata: b\n\n", []sseEvent{{"", "x", []byte("a")}, {"", "message", []byte("b")}}, 0, 0},
		{"the last event field wins", "event: x\nevent: y\ndata: a\n\n", []sseEvent{{"", "y", []byte("a")}}, 0, 0},
		{"unknown fields and case", "Data: a\nfoo: b\ndata: c\n\n", []sseEvent{{"", "message", []byte("c")}}, 0, 0},
		{"comments", ": hi\n:\ndata: a\n\n", []sseEvent{{"", "message", []byte("a")}}, 0, 2},
		{"retry", "retry: 1500\n\n", nil, 1500 * time.Millisecond, 0},
		{"retry not all digits is ignored", "retry: 1500\n\nretry: 15x\n\nretry: -1\n\nretry:\n\n", nil, 1500 * time.Millisecond, 0},
		{"a block the stream ends inside is dropped", "data: a\n\ndata: b\n", []sseEvent{{"", "message", []byte("a")}}, 0, 0},
		{"a line the stream ends inside is dropped", "data: a\n\ndata: b", []sseEvent{{"", "message", []byte("a")}}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.wire), iotest.OneByteReader(strings.NewReader(tc.wire))} {
				events, retry, _, comments, err := parseAll(r)
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("ended with %v", err)
				}
				if len(events) != len(tc.want) {
					t.Fatalf("%q: %+v, want %+v", tc.wire, events, tc.want)
				}
				for i := range events {
					if !sameEvent(events[i], tc.want[i]) {
						t.Errorf("%q: event %d is %+v, want %+v", tc.wire, i, events[i], tc.want[i])
					}
				}
				if retry != tc.retry || comments != tc.comments {
					t.Errorf("%q: retry %v, %d comments; want %v, %d", tc.wire, retry, comments, tc.retry, tc.comments)
				}
			}
		})
	}
}

// TestParseLastEventID: the last event id is set by every blank line, a
// block without data included (sselog's live start is "retry: <ms>",
// "id: <position>" and no data), and persists from block to block; the id
// of a block the stream ends inside is not taken.
func TestParseLastEventID(t *testing.T) {
	const x, y = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "01JDX3ZJ1P8V6Y5C4Q2W7N9K0B"
	for _, tc := range []struct {
		name, wire, want string
	}{
		{"a live start's first block", "retry: 20\nid: " + x + "\n\n", x},
		{"an event's id", "id: " + x + "\ndata: 1\n\n", x},
		{"persists over blocks without an id", "id: " + x + "\ndata: 1\n\ndata: 2\n\n: hi\n\n", x},
		{"a block without data after an event", "id: " + x + "\ndata: 1\n\nid: " + y + "\n\n", y},
		{"a block the stream ends inside", "id: " + x + "\ndata: 1\n\nid: " + y + "\n", x},
		{"a block cut inside its data", "id: " + x + "\n\nid: " + y + "\ndata: 2", x},
		{"an empty id clears it", "id: " + x + "\n\nid\n\n", ""},
		{"an id with NUL is ignored", "id: " + x + "\n\nid: 1\x002\n\n", x},
		{"none", "retry: 20\n\ndata: 1\n\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.wire), iotest.OneByteReader(strings.NewReader(tc.wire))} {
				if got := lastEventID(r); got != tc.want {
					t.Errorf("%q: last event id %q, want %q", tc.wire, got, tc.want)
				}
			}
		})
	}
}

// TestParseCRDoesNotWait: a stream that pauses right after a CR has ended
// that line: the event it completes is dispatched without waiting for a
// LF that may never come.
func TestParseCRDoesNotWait(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	got := make(chan sseEvent, 1)
	go func() {
		p := newSSEParser(pr)
		if ev, err := p.next(); err == nil {
			got <- ev
		}
	}()
	if _, err := pw.Write([]byte("id: 1\rdata: a\r\r")); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if !sameEvent(ev, sseEvent{"1", "message", []byte("a")}) {
			t.Errorf("got %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event ended by CR CR was not dispatched while the stream paused")
	}
}

// TestParseTooLarge: a line without end is refused at the bound, not
// held without limit.
func TestParseTooLarge(t *testing.T) {
	p := newSSEParser(strings.NewReader("data: " + strings.Repeat("x", 100)))
	p.max = 64
	if _, err := p.next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want ErrProtocol", err)
	}
	p = newSSEParser(strings.NewReader(strings.Repeat("data: 0123456789\n", 10)))
	p.max = 64
	if _, err := p.next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("data over the bound: err = %v, want ErrProtocol", err)
	}
}

// FuzzParse holds the streaming parser, fed a byte at a time, to a second
// reading of the rules that splits the whole input into lines first: the
// two must agree on every event, the retry hint, the comments and the
// last event id.
func FuzzParse(f *testing.F) {
	for _, tc := range goldenFrames {
		f.Add([]byte("retry: 10\n\n" + tc.data))
	}
	f.Add([]byte("\xEF\xBB\xBFid: 1\r\ndata: a\r\rdata\nevent: t\n:c\n\nid: 2\x00\ndata: b\n\nretry: 7\n"))
	f.Add([]byte("data: a\r"))
	f.Add([]byte("data: a\r\r\n\n"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		want, wantRetry, wantHasRetry, wantComments, wantLastID := referenceParse(string(wire))
		for _, r := range []io.Reader{bytes.NewReader(wire), iotest.OneByteReader(bytes.NewReader(wire))} {
			got, retry, hasRetry, comments, err := parseAll(r)
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%q: %v", wire, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%q: %d events %+v, reference %d %+v", wire, len(got), got, len(want), want)
			}
			for i := range got {
				if !sameEvent(got[i], want[i]) {
					t.Fatalf("%q: event %d %+v, reference %+v", wire, i, got[i], want[i])
				}
			}
			if retry != wantRetry || hasRetry != wantHasRetry || comments != wantComments {
				t.Fatalf("%q: retry %v %v comments %d, reference %v %v %d", wire, retry, hasRetry, comments, wantRetry, wantHasRetry, wantComments)
			}
		}
		for _, r := range []io.Reader{bytes.NewReader(wire), iotest.OneByteReader(bytes.NewReader(wire))} {
			if got := lastEventID(r); got != wantLastID {
				t.Fatalf("%q: last event id %q, reference %q", wire, got, wantLastID)
			}
		}
	})
}

// FuzzParseFrame: for any data and any type the server accepts, the frame
// the server writes (stream.AppendFrame) reads as one event with that id,
// type and data, line ends as LF.
func FuzzParseFrame(f *testing.F) {
	for _, tc := range goldenFrames {
		f.Add(tc.typ, []byte(tc.data))
	}
	f.Add("a b", []byte("\r\r\n\n\r"))
	id, err := store.ParseID("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		if store.ValidateType(typ) != nil {
			t.Skip()
		}
		wire := stream.AppendFrame(nil, id, typ, data)
		events, _, _, comments, err := parseAll(bytes.NewReader(wire))
		want := sseEvent{id: id.String(), typ: typ, data: []byte(strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n"))}
		if want.typ == "" {
			want.typ = "message"
		}
		if !errors.Is(err, io.EOF) || len(events) != 1 || comments != 0 || !sameEvent(events[0], want) {
			t.Fatalf("%q reads as %+v (%v, %d comments), want %+v", wire, events, err, comments, want)
		}
	})
}

// referenceParse is the WHATWG event stream interpretation read plainly
// over a whole input: split into lines (the text after the last line end
// is no line), then each line taken as the standard says.
func referenceParse(wire string) (events []sseEvent, retry time.Duration, hasRetry bool, comments int, lastID string) {
	wire = strings.TrimPrefix(wire, "\uFEFF")
	var lines []string
	for {
		i := strings.IndexAny(wire, "\r\n")
		if i < 0 {
			break
		}
		lines = append(lines, wire[:i])
		if wire[i] == '\r' && i+1 < len(wire) && wire[i+1] == '\n' {
			i++
		}
		wire = wire[i+1:]
	}
	var idBuf, typ, data string
	for _, line := range lines {
		switch {
		case line == "":
			lastID = idBuf
			if data == "" {
				typ = ""
				continue
			}
			ev := sseEvent{id: lastID, typ: typ, data: []byte(strings.TrimSuffix(data, "\n"))}
			if ev.typ == "" {
				ev.typ = "message"
			}
			events = append(events, ev)
			typ, data = "", ""
		case line[0] == ':':
			comments++
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				typ = value
			case "data":
				data += value + "\n"
			case "id":
				if !strings.Contains(value, "\x00") {
					idBuf = value
				}
			case "retry":
				if value != "" && strings.Trim(value, "0123456789") == "" {
					ms := int64(0)
					for _, c := range value {
						if ms < 86400000 {
							ms = ms*10 + int64(c-'0')
						}
					}
					retry, hasRetry = time.Duration(min(ms, 86400000))*time.Millisecond, true
				}
			}
		}
	}
	return events, retry, hasRetry, comments, lastID
}

func sameEvent(a, b sseEvent) bool {
	return a.id == b.id && a.typ == b.typ && bytes.Equal(a.data, b.data)
}
