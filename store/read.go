package store

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrStreamNotFound is returned for a stream that has never been published
// to, or was deleted and not published to since.
var ErrStreamNotFound = errors.New("no such stream")

// Bounds is what a read saw of a stream's removed past, in the same
// transaction as its events.
type Bounds struct {
	// LowWater is the newest id removed from the stream by retention or
	// deletion; zero if nothing ever was.
	LowWater ID
	// Deleted reports a stream deleted and not published to since.
	Deleted bool
	// Newest is the newest id committed in any stream when the read began:
	// every later commit has larger ids. An id above it was never issued by
	// this database.
	Newest ID
	// Foreign reports a position this log never issued although it sorts
	// below Newest: an id from another log that the log can tell apart
	// (the jetstream backend's ids name their log). A standalone log
	// cannot, and leaves it false: its foreign ids are those above Newest.
	Foreign bool
}

// Gap reports whether a reader resuming after the id after missed events
// that were removed: some event newer than after is gone.
func (b Bounds) Gap(after ID) bool { return after.Compare(b.LowWater) < 0 }

// Scan calls fn for each event of stream with an id greater than after, in
// id order, at most limit of them (limit <= 0 means no limit), in one read
// transaction, and reports from that transaction what was removed from the
// stream: a reader compares its position with the bounds to know whether
// it missed events, with no race against a trim. The event passed to fn,
// and its Data, alias the database's memory map: they are valid only
// during the call. Callers keep limit small, since a long read transaction
// holds back remaps and page reuse. A stream that has no events scans
// nothing. An error from fn ends the scan and is returned.
func (l *Log) Scan(stream string, after ID, limit int, fn func(*Event) error) (Bounds, error) {
	var bounds Bounds
	err := l.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketStreams).Get([]byte(stream)); v != nil {
			c := decodeCounters(v)
			bounds = Bounds{LowWater: c.LowWater, Deleted: c.Deleted}
		}
		// LastID may lag a commit that this transaction already sees; the
		// stored id does not.
		if v := tx.Bucket(bucketMeta).Get(keyLastID); len(v) == len(ID{}) {
			bounds.Newest = ID(v)
		}
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
	return bounds, err
}

// ReadPage is Scan with the events copied out of the database, for a
// caller that keeps them after the read transaction.
func (l *Log) ReadPage(stream string, after ID, limit int) ([]Event, Bounds, error) {
	var out []Event
	bounds, err := l.Scan(stream, after, limit, func(e *Event) error {
		out = append(out, Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: bytes.Clone(e.Data)})
		return nil
	})
	return out, bounds, err
}

// ReadAfter is ReadPage without the bounds. Only tests call it, from
// several packages, which cannot see store's export_test.go.
func (l *Log) ReadAfter(stream string, after ID, limit int) ([]Event, error) {
	events, _, err := l.ReadPage(stream, after, limit)
	return events, err
}

// StreamInfo describes one stream.
type StreamInfo struct {
	Name    string `json:"name"`
	Count   uint64 `json:"count"`
	Bytes   uint64 `json:"bytes"`
	FirstID ID     `json:"first_id"`
	LastID  ID     `json:"last_id"`
	// LowWater is the newest id retention has removed from the stream.
	LowWater ID `json:"low_water"`
}

// Streams lists every stream in name order, with its counters and id range,
// without walking any stream's events. Deleted streams are left out.
func (l *Log) Streams() ([]StreamInfo, error) {
	var out []StreamInfo
	err := l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			if decodeCounters(v).Deleted {
				return nil
			}
			out = append(out, streamInfo(tx, k, v))
			return nil
		})
	})
	return out, err
}

// Stream describes one stream, without walking its events.
func (l *Log) Stream(name string) (StreamInfo, error) {
	if err := ValidateStream(name); err != nil {
		return StreamInfo{}, err
	}
	var info StreamInfo
	err := l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStreams).Get([]byte(name))
		if v == nil || decodeCounters(v).Deleted {
			return fmt.Errorf("%w: %s", ErrStreamNotFound, name)
		}
		info = streamInfo(tx, []byte(name), v)
		return nil
	})
	return info, err
}

func streamInfo(tx *bolt.Tx, name, v []byte) StreamInfo {
	c := decodeCounters(v)
	info := StreamInfo{Name: string(name), Count: c.Count, Bytes: c.Bytes, LowWater: c.LowWater}
	if b := tx.Bucket(bucketEvents).Bucket(name); b != nil {
		cur := b.Cursor()
		if k, _ := cur.First(); k != nil {
			info.FirstID = ID(k)
		}
		if k, _ := cur.Last(); k != nil {
			info.LastID = ID(k)
		}
	}
	return info
}
