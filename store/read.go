package store

import (
	bolt "go.etcd.io/bbolt"
)

// ScanAfter calls fn for each event of stream with an id greater than
// after, in id order, at most limit of them (limit <= 0 means no limit),
// in one read transaction. The event passed to fn, and its Data, alias the
// database's memory map: they are valid only during the call. Callers keep
// limit small, since a long read transaction holds back remaps and page
// reuse. A stream that has no events scans nothing. An error from fn ends
// the scan and is returned.
func (l *Log) ScanAfter(stream string, after ID, limit int, fn func(*Event) error) error {
	_, err := l.Scan(stream, after, limit, fn)
	return err
}

// ReadAfter returns up to limit events of stream after the id after, copied
// out of the database.
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
