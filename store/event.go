package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Event is one entry of a stream's log.
type Event struct {
	// ID is assigned by the log on Append; callers leave it zero.
	ID ID
	// Stream is the stream the event belongs to, set by the log on Append.
	Stream string
	// Type is the SSE event type. Empty means the SSE default, "message".
	Type string
	// Data is the event's payload, stored and sent as given. The HTTP layer
	// stores compact JSON; the log itself does not interpret it.
	Data []byte
}

// ResetType is the SSE event type sselog sends when a subscriber cannot
// resume exactly where it asked to (see the stream package). No stored
// event has it, nor any type that only looks like it (ValidateType), so a
// client can trust every "reset" it receives.
const ResetType = "reset"

// Limits on what the log accepts.
const (
	MaxStreamLen = 128
	MaxTypeLen   = 128
)

// Errors for input the log refuses. They are returned wrapped with detail;
// check them with errors.Is.
var (
	// ErrInvalidStream is returned for a stream name outside the allowed set:
	// 1-128 bytes of A-Z a-z 0-9 . _ -, not starting with ".".
	ErrInvalidStream = errors.New("invalid stream name")
	// ErrInvalidEvent is returned for an event the log cannot store as an
	// SSE event, or must not: a type that is too long, has control or
	// format characters, starts or ends with white space, or could be taken
	// for ResetType (see ValidateType); or missing data.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrEmptyBatch is returned by Append when given no events.
	ErrEmptyBatch = errors.New("empty batch")
)

// ValidateStream checks a stream name. The allowed set keeps names safe as
// bucket keys, URL path segments and log fields, and never a file path.
func ValidateStream(name string) error {
	if len(name) == 0 || len(name) > MaxStreamLen {
		return fmt.Errorf("%w: must be 1-%d characters", ErrInvalidStream, MaxStreamLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: must not start with '.'", ErrInvalidStream)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: only A-Z a-z 0-9 . _ - are allowed", ErrInvalidStream)
		}
	}
	return nil
}

// ValidateType checks an event type: at most MaxTypeLen bytes of valid
// UTF-8 without control characters, so it can never break out of the
// "event:" line of an SSE frame, and nothing a client could take for the
// reserved ResetType. Clients trim types, fold their case or show them to
// people, so besides ResetType itself it refuses any type equal to it
// under Unicode case folding ("RESET", "reſet" with U+017F), any type with
// leading or trailing white space, and any type holding a format
// character (Unicode category Cf: U+FEFF, zero-width and bidirectional
// controls), which is invisible where shown. This is the one place event
// types are judged: the HTTP decoder calls it.
func ValidateType(typ string) error {
	if strings.EqualFold(typ, ResetType) {
		return fmt.Errorf("%w: type %q is reserved for sselog's own notices", ErrInvalidEvent, ResetType)
	}
	if len(typ) > MaxTypeLen {
		return fmt.Errorf("%w: type longer than %d bytes", ErrInvalidEvent, MaxTypeLen)
	}
	if !utf8.ValidString(typ) {
		return fmt.Errorf("%w: type is not valid UTF-8", ErrInvalidEvent)
	}
	for _, r := range typ {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: type contains a control character", ErrInvalidEvent)
		}
		if unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("%w: type contains an invisible format character %U", ErrInvalidEvent, r)
		}
	}
	first, _ := utf8.DecodeRuneInString(typ)
	last, _ := utf8.DecodeLastRuneInString(typ)
	if typ != "" && (unicode.IsSpace(first) || unicode.IsSpace(last)) {
		return fmt.Errorf("%w: type starts or ends with white space", ErrInvalidEvent)
	}
	return nil
}

// validate checks one event before it is queued, so that the writer never
// meets an error caused by one caller's input inside a shared transaction.
func (e *Event) validate() error {
	if err := ValidateType(e.Type); err != nil {
		return err
	}
	if len(e.Data) == 0 {
		return fmt.Errorf("%w: data is required", ErrInvalidEvent)
	}
	return nil
}

// valueVersion is the first byte of every stored value.
const valueVersion = 1

// encodedLen is the stored size of e.
func (e *Event) encodedLen() int {
	return 1 + uvarintLen(uint64(len(e.Type))) + len(e.Type) + len(e.Data)
}

// appendValue appends the stored form of e: version, uvarint type length,
// type, data.
func (e *Event) appendValue(b []byte) []byte {
	b = append(b, valueVersion)
	b = binary.AppendUvarint(b, uint64(len(e.Type)))
	b = append(b, e.Type...)
	return append(b, e.Data...)
}

// errCorrupt reports a stored value that does not decode.
var errCorrupt = errors.New("corrupt stored event")

// decodeValue decodes a stored value into e, reusing e.Type when equal. e.Data aliases v, which
// belongs to bbolt's memory map and is invalid once the transaction ends.
func decodeValue(key, v []byte, e *Event) error {
	if len(key) != len(ID{}) || len(v) < 2 || v[0] != valueVersion {
		return errCorrupt
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || n > uint64(len(v)-1-k) {
		return errCorrupt
	}
	copy(e.ID[:], key)
	rest := v[1+k:]
	// A stream's events mostly share a few types: reusing the previous
	// event's string saves an allocation per event on replay.
	if typ := rest[:n]; string(typ) != e.Type {
		e.Type = string(typ)
	}
	e.Data = rest[n:len(rest):len(rest)]
	return nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
