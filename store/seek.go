package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Starting points by time and by count. Both answer an id to read after,
// so that a start goes through the same exclusive cursor (Scan, a
// subscription) as a resume, and events committed after the answer are
// read exactly.

// ErrTimeRange is returned by IDBefore for a time no event id can carry:
// before the Unix epoch, or after the last millisecond a ULID holds.
var ErrTimeRange = errors.New("time outside the range of event ids (1970-01-01T00:00:00Z to 10889-08-02T05:31:50.655Z)")

// IDBefore returns the largest id whose time is before t: every id whose
// time is t or later sorts after it, and every id whose time is earlier
// sorts at or before it. Reading after it therefore starts at the first
// event at or after t. An id's time is whole milliseconds, so a t inside a
// millisecond counts from the next one (an id of that millisecond is
// before t). For t at the Unix epoch, no id has an earlier time, and the
// answer is the zero ID. A t before the epoch or after the last
// millisecond an id can carry (ULID's 48 bits of it, in the year 10889) is
// ErrTimeRange.
func IDBefore(t time.Time) (ID, error) {
	if t.Before(time.Unix(0, 0)) || t.After(time.UnixMilli(maxMs)) {
		return ID{}, fmt.Errorf("%w: %s", ErrTimeRange, t.UTC().Format(time.RFC3339Nano))
	}
	// Within the range, t.Unix() is small enough that ms cannot overflow.
	ms := t.Unix()*1000 + int64(t.Nanosecond()/1e6)
	if t.Nanosecond()%1e6 == 0 {
		// t is exactly at ms: ids of ms are not before it.
		ms--
	}
	if ms < 0 {
		return ID{}, nil
	}
	id := ID{byte(ms >> 40), byte(ms >> 32), byte(ms >> 24), byte(ms >> 16), byte(ms >> 8), byte(ms)}
	for i := 6; i < len(id); i++ {
		id[i] = 0xff
	}
	return id, nil
}

// StartOfLast returns the id after which the newest n events of stream
// begin: reading after it gives those n events, then whatever was
// committed since. It is the id of the event just before the n-th newest,
// found by walking back n steps from the newest in one read transaction
// (so the cost is bounded by n, and callers bound n). A stream holding n
// events or fewer answers its low-water mark, which every retained event
// is after (the zero ID if nothing was ever removed); so does a stream
// that has no events or never existed. n must be at least 1.
func (l *Log) StartOfLast(stream string, n int) (after ID, err error) {
	if n < 1 {
		return ID{}, fmt.Errorf("start of the last %d events of %s: n must be at least 1", n, stream)
	}
	err = l.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketStreams).Get([]byte(stream)); v != nil {
			after = decodeCounters(v).LowWater
		}
		b := tx.Bucket(bucketEvents).Bucket([]byte(stream))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, _ := c.Last()
		for i := 0; i < n && k != nil; i++ {
			k, _ = c.Prev()
		}
		if k != nil {
			after = ID(k)
		}
		return nil
	})
	if err != nil {
		return ID{}, fmt.Errorf("start of the last %d events of %s: %w", n, stream, err)
	}
	return after, nil
}
