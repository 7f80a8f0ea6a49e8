package stream_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// frameID is a fixed id so that golden files do not change between runs.
var frameID = mustParseID("01ARZ3NDEKTSV4RRFFQ69G5FAV")

func mustParseID(s string) store.ID {
	id, err := store.ParseID(s)
	if err != nil {
		panic(err)
	}
	return id
}

var frameCases = []struct {
	name string
	typ  string
	data string
}{
	{"no_type", "", `{"a":1}`},
	{"with_type", "update", `{"a":1}`},
	{"unicode_type", "größe.änderung", `"x"`},
	{"lf", "", "one\ntwo\nthree"},
	{"cr", "", "one\rtwo\rthree"},
	{"crlf", "", "one\r\ntwo\r\nthree"},
	{"mixed", "", "a\r\nb\rc\nd\r\r\ne\n\rf"},
	{"trailing_lf", "", "line\n"},
	{"trailing_cr", "", "line\r"},
	{"trailing_crlf", "", "line\r\n"},
	{"only_newline", "", "\n"},
	{"empty_lines", "", "\n\nmiddle\n\n"},
	{"leading_space", "", " one\n  two"},
	{"looks_like_fields", "", "data: x\nid: 0\nevent: evil\n: comment\nretry: 1"},
	{"empty", "", ""},
}

func TestAppendFrameGolden(t *testing.T) {
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			got := stream.AppendFrame(nil, frameID, tc.typ, []byte(tc.data))
			path := filepath.Join("..", "testdata", "frames", tc.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("frame differs from %s\n got: %q\nwant: %q", path, got, want)
			}
		})
	}
}

// TestAppendFrameAppends checks that the frame goes after what b holds,
// which the subscriber's replay buffer depends on.
func TestAppendFrameAppends(t *testing.T) {
	prefix := []byte("earlier frames\n\n")
	got := stream.AppendFrame(bytes.Clone(prefix), frameID, "t", []byte("d"))
	want := append(bytes.Clone(prefix), stream.AppendFrame(nil, frameID, "t", []byte("d"))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestAppendFrameRoundTrip(t *testing.T) {
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			checkRoundTrip(t, tc.typ, []byte(tc.data))
		})
	}
}

// FuzzAppendFrame checks the round trip for any data and any type that
// store.ValidateType accepts: no payload can add, drop or alter a field.
func FuzzAppendFrame(f *testing.F) {
	for _, tc := range frameCases {
		f.Add(tc.typ, []byte(tc.data))
	}
	f.Add("a b", []byte("\r\r\n\n\r"))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		if store.ValidateType(typ) != nil {
			t.Skip()
		}
		checkRoundTrip(t, typ, data)
	})
}

func checkRoundTrip(t *testing.T, typ string, data []byte) {
	t.Helper()
	frame := stream.AppendFrame(nil, frameID, typ, data)
	events, retry, comments := parseSSE(frame)
	if len(events) != 1 || retry != "" || comments != 0 {
		t.Fatalf("frame %q parses to %d events, retry %q, %d comments; want exactly one event", frame, len(events), retry, comments)
	}
	wantType := typ
	if wantType == "" {
		wantType = "message"
	}
	want := sseEvent{ID: frameID.String(), Type: wantType, Data: normalizeNewlines(string(data))}
	if events[0] != want {
		t.Fatalf("frame %q parses to %+v, want %+v", frame, events[0], want)
	}
}
