package store_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func TestValidateStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string
		ok     bool
	}{
		{"one char", "a", true},
		{"whole alphabet", "AZaz09._-", true},
		{"dot inside", "orders.v2", true},
		// Only a leading dot can make a path segment special; "a..b" is
		// neither "." nor "..", and the documented set allows it.
		{"double dot inside", "a..b", true},
		{"trailing dot", "a.", true},
		{"max length", strings.Repeat("x", store.MaxStreamLen), true},
		{"empty", "", false},
		{"too long", strings.Repeat("x", store.MaxStreamLen+1), false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"leading dot", ".hidden", false},
		{"parent path", "../etc", false},
		{"slash", "a/b", false},
		{"leading slash", "/a", false},
		{"backslash", `a\b`, false},
		{"space", "a b", false},
		{"colon", "a:b", false},
		{"percent", "a%2Fb", false},
		{"NUL", "a\x00", false},
		{"newline", "a\n", false},
		{"latin letter", "é", false},
		{"CJK", "日本", false},
		{"fullwidth letter", "ａ", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := store.ValidateStream(tc.stream)
			if tc.ok && err != nil {
				t.Fatalf("ValidateStream(%q) = %v, want nil", tc.stream, err)
			}
			if !tc.ok && !errors.Is(err, store.ErrInvalidStream) {
				t.Fatalf("ValidateStream(%q) = %v, want ErrInvalidStream", tc.stream, err)
			}
		})
	}
}

func TestValidateType(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  string
		ok   bool
	}{
		{"empty means message", "", true},
		{"plain", "user.created", true},
		{"spaces and punctuation", "a b:c/d", true},
		{"unicode", "événement 日本", true},
		{"max bytes", strings.Repeat("x", store.MaxTypeLen), true},
		// The limit is in bytes: 64 two-byte runes fit, one more byte does not.
		{"max bytes multibyte", strings.Repeat("é", store.MaxTypeLen/2), true},
		{"too long", strings.Repeat("x", store.MaxTypeLen+1), false},
		{"too long multibyte", strings.Repeat("é", store.MaxTypeLen/2) + "x", false},
		{"LF", "a\nb", false},
		{"CR", "a\rb", false},
		{"CRLF", "a\r\n", false},
		{"NUL", "\x00", false},
		{"tab", "a\tb", false},
		{"DEL", "a\x7f", false},
		{"C1 NEL", "a\u0085b", false},
		{"invalid UTF-8", "a\xffb", false},
		{"truncated UTF-8", "\xc3", false},
		// Nothing a client could take for the server's reset notice.
		{"reset", "reset", false},
		{"reset, leading space", " reset", false},
		{"reset, trailing space", "reset ", false},
		{"reset, title case", "Reset", false},
		{"reset, upper case", "RESET", false},
		{"reset, byte order mark", "\ufeffreset", false},
		{"reset, long s", "re\u017fet", false},
		{"reset, zero-width space", "re\u200bset", false},
		{"leading no-break space", "\u00a0a", false},
		{"trailing ideographic space", "a\u3000", false},
		{"bidi override", "a\u202eb", false},
		{"soft hyphen", "a\u00adb", false},
		{"resets", "resets", true},
		{"preset", "preset", true},
		{"re set", "re set", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := store.ValidateType(tc.typ)
			if tc.ok && err != nil {
				t.Fatalf("ValidateType(%q) = %v, want nil", tc.typ, err)
			}
			if !tc.ok && !errors.Is(err, store.ErrInvalidEvent) {
				t.Fatalf("ValidateType(%q) = %v, want ErrInvalidEvent", tc.typ, err)
			}
		})
	}
}

// A rejected Append must leave no trace: not one event of the batch, no
// counter change, no commit, no new LastID.
func TestAppendRejectsWholeBatch(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{})
	var commits atomic.Int64
	l.OnCommit(func([]store.Event) { commits.Add(1) })
	mustAppend(t, l, "s", makeEvents("seed", 1, 0)...)

	good := store.Event{Type: "ok", Data: []byte(`{}`)}
	for _, tc := range []struct {
		name   string
		stream string
		events []store.Event
		want   error
	}{
		{"empty stream name", "", []store.Event{good}, store.ErrInvalidStream},
		{"leading dot stream", ".s", []store.Event{good}, store.ErrInvalidStream},
		{"slash in stream", "s/t", []store.Event{good}, store.ErrInvalidStream},
		{"unicode stream", "sé", []store.Event{good}, store.ErrInvalidStream},
		{"nil batch", "s", nil, store.ErrEmptyBatch},
		{"empty batch", "s", []store.Event{}, store.ErrEmptyBatch},
		{"control char first", "s", []store.Event{{Type: "a\nb", Data: []byte("x")}, good}, store.ErrInvalidEvent},
		{"control char middle", "s", []store.Event{good, {Type: "a\rb", Data: []byte("x")}, good}, store.ErrInvalidEvent},
		{"long type last", "s", []store.Event{good, good, {Type: strings.Repeat("t", store.MaxTypeLen+1), Data: []byte("x")}}, store.ErrInvalidEvent},
		{"invalid UTF-8 type", "s", []store.Event{good, {Type: "\xff", Data: []byte("x")}}, store.ErrInvalidEvent},
		{"nil data middle", "s", []store.Event{good, {Type: "t"}, good}, store.ErrInvalidEvent},
		{"empty data last", "s", []store.Event{good, {Type: "t", Data: []byte{}}}, store.ErrInvalidEvent},
		{"bad event in new stream", "fresh", []store.Event{good, {Data: nil}}, store.ErrInvalidEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			beforeStreams, err := l.Streams()
			if err != nil {
				t.Fatal(err)
			}
			beforeLast, beforeCommits := l.LastID(), commits.Load()

			got, err := l.Append(t.Context(), tc.stream, tc.events)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Append = %v, %v; want %v", got, err, tc.want)
			}
			if got != nil {
				t.Errorf("rejected Append returned ids %v", got)
			}

			afterStreams, err := l.Streams()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(afterStreams, beforeStreams) {
				t.Errorf("streams changed: %+v, was %+v", afterStreams, beforeStreams)
			}
			if l.LastID() != beforeLast {
				t.Errorf("LastID moved to %s", l.LastID())
			}
			if n := commits.Load(); n != beforeCommits {
				t.Errorf("%d commits after a rejected append, was %d", n, beforeCommits)
			}
		})
	}
	if evs := readAll(t, l, "s"); len(evs) != 1 || evs[0].Type != "seed" {
		t.Fatalf("stream s holds %d events, want only the seed", len(evs))
	}
	if evs := readAll(t, l, "fresh"); len(evs) != 0 {
		t.Fatalf("stream fresh holds %d events, want none", len(evs))
	}
	// Rejections must not wedge the writer.
	mustAppend(t, l, "s", good)
}
