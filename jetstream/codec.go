package jetstream

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sselog/sselog/store"
)

// An event message holds the events one write appends to one stream: the
// requests of a group that go to the same stream, one after the other, so
// that a busy group costs JetStream one message (with sync_interval
// "always", every message is an fsync on every replica). Its body:
//
//	version (1)
//	uvarint requests
//	per request: uvarint events, uvarint key length, key, digest (32, when the key is not empty)
//	per event:   uvarint type length, type, uvarint data length, data
//
// The n-th event of the message at sequence s has the id (ms, epoch, s, n):
// see id.go. Retention trims events one by one in every copy; JetStream
// drops a message once every event in it is gone.

const codecVersion = 1

// maxEventsPerMessage is how many events one message can hold: the index
// field of an id.
const maxEventsPerMessage = 1 << 16

// errCodec reports a message body that does not decode.
var errCodec = errors.New("undecodable event message")

// request is one append request within a message.
type request struct {
	events []store.Event
	key    *store.Key
}

// encodedLen is the size appendMessage adds for reqs.
func encodedLen(reqs []request) int {
	n := 1 + binary.MaxVarintLen64
	for _, r := range reqs {
		n += 2*binary.MaxVarintLen64 + 32
		if r.key != nil {
			n += len(r.key.Name)
		}
		for _, e := range r.events {
			n += 2*binary.MaxVarintLen64 + len(e.Type) + len(e.Data)
		}
	}
	return n
}

func appendMessage(b []byte, reqs []request) []byte {
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(len(reqs)))
	for _, r := range reqs {
		b = binary.AppendUvarint(b, uint64(len(r.events)))
		if r.key == nil {
			b = binary.AppendUvarint(b, 0)
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(r.key.Name)))
		b = append(b, r.key.Name...)
		b = append(b, r.key.Digest[:]...)
	}
	for _, r := range reqs {
		for _, e := range r.events {
			b = binary.AppendUvarint(b, uint64(len(e.Type)))
			b = append(b, e.Type...)
			b = binary.AppendUvarint(b, uint64(len(e.Data)))
			b = append(b, e.Data...)
		}
	}
	return b
}

// decodeMessage turns the message at seq of stream into the writes it
// holds, with their ids. The events' data alias body.
func decodeMessage(body []byte, stream string, ms uint64, epoch uint16, seq uint64) ([]store.Applied, error) {
	d := decoder{b: body}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("%w: version %d", errCodec, v)
	}
	nreq := d.uvarint()
	if d.err != nil || nreq == 0 || nreq > maxEventsPerMessage {
		return nil, fmt.Errorf("%w: %d requests", errCodec, nreq)
	}
	writes := make([]store.Applied, nreq)
	counts := make([]uint64, nreq)
	total := uint64(0)
	for i := range writes {
		counts[i] = d.uvarint()
		total += counts[i]
		if counts[i] == 0 || total > maxEventsPerMessage {
			return nil, fmt.Errorf("%w: request of %d events", errCodec, counts[i])
		}
		if kl := d.uvarint(); kl > store.MaxKeyLen {
			return nil, fmt.Errorf("%w: key of %d bytes", errCodec, kl)
		} else if kl > 0 {
			k := &store.Key{Name: string(d.bytes(kl))}
			copy(k.Digest[:], d.bytes(32))
			if d.err == nil && store.ValidateKey(k.Name) != nil {
				return nil, fmt.Errorf("%w: invalid key", errCodec)
			}
			writes[i].Key = k
		}
		writes[i].Stream = stream
		writes[i].Events = make([]store.Event, 0, counts[i])
	}
	n := uint64(0)
	for i := range writes {
		for range counts[i] {
			typ := string(d.bytes(d.uvarint()))
			data := d.bytes(d.uvarint())
			if d.err == nil && (len(data) == 0 || store.ValidateType(typ) != nil) {
				// The copy would refuse it, and stop following the log.
				return nil, fmt.Errorf("%w: event %d has no data or an invalid type", errCodec, n)
			}
			writes[i].Events = append(writes[i].Events, store.Event{ID: makeID(ms, epoch, seq, n), Stream: stream, Type: typ, Data: data})
			n++
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes left over", errCodec, len(d.b))
	}
	return writes, nil
}

// decoder reads a body, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated", errCodec)
	}
}
