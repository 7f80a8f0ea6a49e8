package store_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/sselog/sselog/store"
)

// validStream is the README's rule for stream names, written independently
// of ValidateStream: 1 to 128 bytes of A-Z a-z 0-9 . _ -, not starting with
// a dot.
var validStream = regexp.MustCompile(`\A[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\z`)

// FuzzValidateStream holds ValidateStream to the documented rule: every
// name it accepts is safe as a bucket key, a URL path segment and a log
// field, and every name it refuses is refused with ErrInvalidStream.
func FuzzValidateStream(f *testing.F) {
	for _, s := range []string{
		"a", "orders", "AZaz09._-", "a..b", "a.", "-", "_",
		strings.Repeat("x", store.MaxStreamLen), strings.Repeat("x", store.MaxStreamLen+1),
		"", ".", "..", ".hidden", "../etc", "a/b", `a\b`, "a b", "a%2Fb", "a\x00", "a\n", "é", "ａ", "a\u212a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := store.ValidateStream(name)
		want := validStream.MatchString(name)
		if want != (err == nil) {
			t.Fatalf("ValidateStream(%q) = %v, the documented rule says valid=%v", name, err, want)
		}
		if err != nil {
			if !errors.Is(err, store.ErrInvalidStream) {
				t.Fatalf("ValidateStream(%q) = %v, want ErrInvalidStream", name, err)
			}
			return
		}
		// Belt and braces over the regexp: no byte can make the name a
		// path, a second segment or a second log line.
		if name == "." || name == ".." || strings.ContainsAny(name, "/\\%\x00\r\n ") {
			t.Fatalf("ValidateStream accepted %q", name)
		}
	})
}

// FuzzParseID checks id text both ways. Any text ParseID accepts is the
// canonical text of its id up to case (Crockford's aliases I, L, O and U are
// refused, so nothing else can differ); anything else is ErrInvalidID. Any
// 16 bytes, read as an id, print as 26 characters that parse back to the
// same id; and text order is id order, so clients may compare ids as
// strings.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"00000000000000000000000000", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "80000000000000000000000000",
		"01ARZ3NDEKTSV4RRFFQ69G5FAV", "01arz3ndektsv4rrffq69g5fav", "01ARZ3NDEKTSV4RRFFQ69G5FA",
		"01ARZ3NDEKTSV4RRFFQ69G5FAVX", "0IARZ3NDEKTSV4RRFFQ69G5FAV", "0LARZ3NDEKTSV4RRFFQ69G5FAV",
		"0OARZ3NDEKTSV4RRFFQ69G5FAV", "0UARZ3NDEKTSV4RRFFQ69G5FAV", " 01ARZ3NDEKTSV4RRFFQ69G5FA",
		"01ARZ3NDEKTSV4RRFFQ69G5FA\x00", "01ARZ3NDEKTSV4RRFFQ69G5FA\u212a", "",
		"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := store.ParseID(s)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidID) {
				t.Fatalf("ParseID(%q) = %v, want ErrInvalidID", s, err)
			}
			// The message quotes at most 40 bytes of the input (at most
			// 4 characters each once quoted): a huge Last-Event-ID is not
			// echoed back in the 400.
			if len(err.Error()) > 300 {
				t.Fatalf("ParseID(%d bytes): error of %d bytes echoes the input: %.80s...", len(s), len(err.Error()), err)
			}
		} else {
			if got := id.String(); got != strings.ToUpper(s) {
				t.Fatalf("ParseID(%q).String() = %q, want the input in upper case", s, got)
			}
			if back, err := store.ParseID(id.String()); err != nil || back != id {
				t.Fatalf("ParseID(%q) = %v, %v; want %v", id.String(), back, err, id)
			}
		}

		// The input's bytes as two ids.
		var a, b store.ID
		copy(a[:], s)
		if len(s) > len(a) {
			copy(b[:], s[len(a):])
		}
		for _, x := range []store.ID{a, b} {
			text := x.String()
			back, err := store.ParseID(text)
			if len(text) != 26 || err != nil || back != x {
				t.Fatalf("id %x prints as %q, which parses to %x, %v", x[:], text, back[:], err)
			}
			if got := string(x.AppendText(nil)); got != text {
				t.Fatalf("id %x: AppendText %q, String %q", x[:], got, text)
			}
		}
		if got, want := strings.Compare(a.String(), b.String()), a.Compare(b); got != want {
			t.Fatalf("ids %x and %x compare %d, their text compares %d", a[:], b[:], want, got)
		}
	})
}
