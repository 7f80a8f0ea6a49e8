package httpapi

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

// rfc3339 is RFC 3339's date-time grammar (section 5.6) with upper-case T
// and Z, written out independently of parseSince's checks.
var rfc3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)

// FuzzParseSince holds parseSince to the README's words, restated here
// from other parts: text of ASCII digits alone is Unix milliseconds,
// accepted up to 2^48-1; other text is accepted when it has RFC 3339's
// shape, time.Parse takes it and it is not before the epoch. An accepted
// value is the largest id whose time is before the one given (every entropy
// bit set, its millisecond the last one before that time). A refused one
// is a 400 whose message names the parameter.
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{
		"0", "1", "1767225600000", "281474976710655", "281474976710656", "0001767225600000",
		"99999999999999999999", "9223372036854775807", "9223372036854775808", "",
		"2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.123456789123Z",
		"2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00-23:59", "9999-12-31T23:59:59.999999999-23:59",
		"1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999999Z", "1970-01-01T00:00:00.0000001Z",
		"yesterday", "1e3", "+5", "-5", "2026-13-01T00:00:00Z", "2026-01-01t00:00:00z",
		"2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00.Z", "２０２６",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseSince(s)

		var want time.Time
		ok := false
		switch {
		case s != "" && strings.Trim(s, "0123456789") == "":
			digits := strings.TrimLeft(s, "0")
			ms, perr := strconv.ParseUint(digits, 10, 64)
			if digits == "" {
				ms, perr = 0, nil
			}
			ok = perr == nil && ms <= 1<<48-1
			want = time.UnixMilli(int64(ms))
		case rfc3339.MatchString(s):
			tm, perr := time.Parse(time.RFC3339Nano, s)
			ok = perr == nil && !tm.Before(time.Unix(0, 0))
			want = tm
		}

		if !ok {
			var re *requestError
			if err == nil {
				t.Fatalf("parseSince(%q) = %s, want an error", s, id)
			}
			if !errors.As(err, &re) || re.status != http.StatusBadRequest || !strings.HasPrefix(re.msg, "since") {
				t.Fatalf("parseSince(%q): %v, want a 400 naming since", s, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("parseSince(%q): %v, want %s", s, err, want)
		}
		if id.IsZero() {
			if !want.Equal(time.Unix(0, 0)) {
				t.Fatalf("parseSince(%q) = the zero id, for %s", s, want)
			}
			return
		}
		for _, b := range id[6:] {
			if b != 0xff {
				t.Fatalf("parseSince(%q) = %s: entropy not all ones", s, id)
			}
		}
		// Its millisecond is before the time, and the next one is not.
		ms := id.Time()
		if !ms.Before(want) || ms.Add(time.Millisecond).Before(want) {
			t.Fatalf("parseSince(%q) = %s at %s, want the last millisecond before %s", s, id, ms, want)
		}
		if next, err := store.ParseID(id.String()); err != nil || next != id {
			t.Fatalf("parseSince(%q) = %s does not round-trip: %v", s, id, err)
		}
	})
}
