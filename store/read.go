package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ScanAfter calls fn for each event of stream with an id greater than
// after, in id order, at most limit of them (limit <= 0 means no limit),
// in one read transaction. The event passed to fn, and its Data, alias the
// database's memory map: they are valid only during the call. Callers keep
// limit small, since a long read transaction holds back remaps and page
// reuse. A stream that has no events scans nothing. An error from fn ends
// the scan and is returned.
func (l *Log) ScanAfter(stream string, after ID, limit int, fn func(*Event) error) error {
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents).Bucket([]byte(stream))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Seek(after[:])
		if k != nil && ID(k) == after {
			k, v = c.Next()
		}
		e := Event{Stream: stream}
		for n := 0; k != nil && (limit <= 0 || n < limit); n++ {
			if err := decodeValue(k, v, &e); err != nil {
				return fmt.Errorf("stream %s id %x: %w", stream, k, err)
			}
			if err := fn(&e); err != nil {
				return err
			}
			k, v = c.Next()
		}
		return nil
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// ReadAfter returns up to limit events of stream after the id after, copied
// out of the database.
func (l *Log) ReadAfter(stream string, after ID, limit int) ([]Event, error) {
	var out []Event
	err := l.ScanAfter(stream, after, limit, func(e *Event) error {
		out = append(out, Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: append([]byte(nil), e.Data...)})
		return nil
	})
	return out, err
}

// StreamInfo describes one stream.
type StreamInfo struct {
	Name    string `json:"name"`
	Count   uint64 `json:"count"`
	Bytes   uint64 `json:"bytes"`
	FirstID ID     `json:"first_id"`
	LastID  ID     `json:"last_id"`
}

// Streams lists every stream in name order, with its counters and id range,
// without walking any stream's events.
func (l *Log) Streams() ([]StreamInfo, error) {
	var out []StreamInfo
	err := l.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		return tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			info := StreamInfo{Name: string(k)}
			c := decodeCounters(v)
			info.Count, info.Bytes = c.Count, c.Bytes
			if b := events.Bucket(k); b != nil {
				cur := b.Cursor()
				if k, _ := cur.First(); k != nil {
					info.FirstID = ID(k)
				}
				if k, _ := cur.Last(); k != nil {
					info.LastID = ID(k)
				}
			}
			out = append(out, info)
			return nil
		})
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return nil, ErrClosed
	}
	return out, err
}
