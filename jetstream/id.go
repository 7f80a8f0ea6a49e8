package jetstream

import (
	"encoding/binary"
	"strings"

	"github.com/sselog/sselog/store"
)

// An id of this backend is a ULID laid out as
//
//	48 bits: milliseconds, the writer's clock clamped to never go below the previous id's
//	16 bits: the epoch of the JetStream stream (changes when it is recreated)
//	48 bits: the JetStream sequence of the event's message
//	16 bits: the event's index within its message (see codec.go)
//
// The writer takes its time only after it knows the log's last id (it
// writes on top of the position its replica has applied, and JetStream
// refuses the write otherwise), so time never decreases along the
// sequence, and ids compare bytewise in log order like a standalone log's.
// The sequence is what positions mean: a resume decodes it with no lookup.

// makeID builds the id of the n-th event of the message at seq.
func makeID(ms uint64, epoch uint16, seq, n uint64) store.ID {
	var id store.ID
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], ms)
	copy(id[:6], t[2:])
	binary.BigEndian.PutUint16(id[6:8], epoch)
	binary.BigEndian.PutUint64(t[:], seq)
	copy(id[8:14], t[2:])
	binary.BigEndian.PutUint16(id[14:], uint16(n))
	return id
}

// idMs, idEpoch and idSeq take an id apart.
func idMs(id store.ID) uint64 {
	var t [8]byte
	copy(t[2:], id[:6])
	return binary.BigEndian.Uint64(t[:])
}

func idEpoch(id store.ID) uint16 { return binary.BigEndian.Uint16(id[6:8]) }

// idSeq is the sequence of the message holding the event.
func idSeq(id store.ID) uint64 {
	var t [8]byte
	copy(t[2:], id[8:14])
	return binary.BigEndian.Uint64(t[:])
}

// maxSeq is the largest sequence an id can carry: 2^48, at 100,000
// messages a second, lasts 89 years.
const maxSeq = 1<<48 - 1

// Subjects of the JetStream stream. Stream names are tokens of their own:
// a name's '.' (allowed in names, a separator in subjects) becomes '~',
// which names never hold, so the mapping is one to one and a wildcard
// over a kind of message never crosses into another stream's subject.
const (
	prefix     = "sselog."
	subjEvents = prefix + "ev."  // events of a stream
	subjCut    = prefix + "cut." // trims and deletions of a stream: the newest one of each stream is kept
	subjPolicy = prefix + "pol." // retention overrides of a stream: the newest one is kept
	subjAll    = prefix + ">"
)

func token(stream string) string { return strings.ReplaceAll(stream, ".", "~") }

func untoken(tok string) string { return strings.ReplaceAll(tok, "~", ".") }

// splitSubject returns a subject's kind (its prefix) and stream name.
func splitSubject(subject string) (kind, stream string, ok bool) {
	for _, k := range []string{subjEvents, subjCut, subjPolicy} {
		if rest, found := strings.CutPrefix(subject, k); found && rest != "" {
			return k, untoken(rest), true
		}
	}
	return "", "", false
}
