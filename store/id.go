package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// ID is an event id: a ULID, 48 bits of milliseconds then 80 bits of
// entropy, compared bytewise. The zero ID sorts before every issued id, so
// reading "after the zero ID" reads a stream from its beginning.
type ID [16]byte

// ErrInvalidID is returned by ParseID for text that is not a ULID.
var ErrInvalidID = errors.New("invalid event id")

// ParseID parses the 26-character Crockford base32 form of a ULID.
func ParseID(s string) (ID, error) {
	u, err := ulid.ParseStrict(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w %q: %w", ErrInvalidID, truncate(s, 40), err)
	}
	return ID(u), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// String returns the canonical 26-character ULID text.
func (id ID) String() string { return ulid.ULID(id).String() }

// AppendText appends the 26-character ULID text to b without allocating a
// string; the SSE frame encoder uses it.
func (id ID) AppendText(b []byte) []byte {
	var buf [ulid.EncodedSize]byte
	_ = ulid.ULID(id).MarshalTextTo(buf[:])
	return append(b, buf[:]...)
}

// MarshalText implements encoding.TextMarshaler, so ids encode as JSON strings.
func (id ID) MarshalText() ([]byte, error) { return id.AppendText(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseID, so that
// what sselog writes as JSON (its answers, inspect --json) reads back.
func (id *ID) UnmarshalText(b []byte) error {
	x, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = x
	return nil
}

// Time is the id's millisecond timestamp.
func (id ID) Time() time.Time { return ulid.Time(ulid.ULID(id).Time()) }

// MinIDAt is the smallest id of the millisecond of t: every id issued at t
// or later sorts at or after it, every id issued before sorts before it.
func MinIDAt(t time.Time) ID {
	ms := t.UnixMilli()
	if ms < 0 {
		return ID{}
	}
	var u ulid.ULID
	if u.SetTime(uint64(ms)) != nil {
		// Beyond the year 10889: above every id.
		return ID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	return ID(u)
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Compare returns -1, 0 or +1 as id sorts before, equal to or after other.
func (id ID) Compare(other ID) int { return bytes.Compare(id[:], other[:]) }

func (id ID) ms() uint64 {
	return uint64(id[0])<<40 | uint64(id[1])<<32 | uint64(id[2])<<24 |
		uint64(id[3])<<16 | uint64(id[4])<<8 | uint64(id[5])
}

// maxMs is the largest timestamp a ULID can hold.
const maxMs = 1<<48 - 1

// generator issues strictly increasing ids. It is owned by the writer
// goroutine, so it has no lock.
type generator struct {
	last ID
	now  func() time.Time
}

// next returns an id greater than every id issued before. Within one
// millisecond, or while the clock is behind the last id, it increments the
// last id's entropy instead of drawing new entropy: that is what keeps ids
// increasing when the wall clock steps backwards.
func (g *generator) next() ID {
	now := g.now().UnixMilli()
	ms := uint64(max(now, 0)) // a clock before 1970 counts as 1970, not as the far future
	if ms > maxMs {
		ms = maxMs
	}
	if ms > g.last.ms() || g.last.IsZero() {
		g.last = fresh(ms)
		return g.last
	}
	id := g.last
	if !incrementEntropy(&id) {
		// 2^80 ids in one millisecond: borrow the next millisecond.
		id = fresh(g.last.ms() + 1)
	}
	g.last = id
	return id
}

// fresh builds an id at ms with random entropy whose top bit is clear, so
// that the increments that follow within the millisecond have room to spare.
func fresh(ms uint64) ID {
	var id ID
	id[0], id[1], id[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	id[3], id[4], id[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	_, _ = rand.Read(id[6:]) // crypto/rand.Read never fails on Linux (Go 1.24+).
	id[6] &= 0x7f
	return id
}

// incrementEntropy adds one to the 80-bit entropy and reports false on
// overflow.
func incrementEntropy(id *ID) bool {
	lo := binary.BigEndian.Uint64(id[8:])
	hi := binary.BigEndian.Uint16(id[6:8])
	lo++
	if lo == 0 {
		hi++
		if hi == 0 {
			return false
		}
	}
	binary.BigEndian.PutUint64(id[8:], lo)
	binary.BigEndian.PutUint16(id[6:8], hi)
	return true
}
