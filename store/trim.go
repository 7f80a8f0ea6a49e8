package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Cut selects the oldest events of a stream that a trim removes: every
// event with an id below Before (the zero ID: none by age), then the oldest
// until at most MaxEvents remain and their stored size is at most MaxBytes
// (zero: no such limit). The result is always a prefix of the stream.
type Cut struct {
	Before    ID
	MaxEvents uint64
	MaxBytes  uint64
}

// Selects reports whether c selects any event of the stream info
// describes, from its counters alone: the same rule Trim applies, key by
// key, in its own transaction. It lets a caller skip a write transaction
// (and its fsync) for a stream within its limits. Counters read earlier
// may be stale by the time Trim runs; Trim decides again, so staleness
// only delays a trim.
func (c Cut) Selects(info StreamInfo) bool {
	return info.Count > 0 && c.selects(info.FirstID[:], info.Count, info.Bytes)
}

// selects is the one selection rule: the oldest remaining event, whose key
// is first, goes while it is below Before or while the stream holds more
// than MaxEvents events or MaxBytes of stored data (count and size are the
// stream's totals before it goes).
func (c Cut) selects(first []byte, count, size uint64) bool {
	return bytes.Compare(first, c.Before[:]) < 0 ||
		c.MaxEvents > 0 && count > c.MaxEvents ||
		c.MaxBytes > 0 && size > c.MaxBytes
}

// scan walks a stream's events from the oldest while c selects them, at
// most maxKeys, calling fn with each key (valid only during the call), and
// returns what they add up to (LowWater: the last of them) and the
// stream's count and size without them. Trim removes what it walks;
// PlanTrim only reports it.
func (c Cut) scan(cur *bolt.Cursor, counts counters, maxKeys int, fn func(k []byte)) (res Trimmed, count, size uint64) {
	count, size = counts.Count, counts.Bytes
	for k, v := cur.First(); k != nil && c.selects(k, count, size); k, v = cur.Next() {
		if res.Events == maxKeys {
			res.More = true
			break
		}
		fn(k)
		res.Events++
		res.Bytes += uint64(len(v))
		res.LowWater = ID(k)
		count -= min(count, 1)
		size -= min(size, uint64(len(v)))
	}
	return res, count, size
}

// Trimmed reports one Trim call.
type Trimmed struct {
	Events   int
	Bytes    uint64
	LowWater ID
	// More is set when the call stopped at its key limit with more to cut.
	More bool
}

// Trim removes at most maxKeys of the events of stream that cut selects, in
// one write transaction, and moves the stream's low-water mark to the
// newest removed id. Callers loop while More is set: the bound keeps each
// transaction short, so an append never waits long behind a trim.
func (l *Log) Trim(stream string, cut Cut, maxKeys int) (Trimmed, error) {
	if l.replica != "" {
		return Trimmed{}, ErrReplica
	}
	return l.trim(stream, cut, maxKeys, 0, ID{})
}

// trim is Trim for a replica too: the transaction that finishes the cut
// records the position pos (if not zero) and raises the low-water mark to
// at least floor, even with nothing to remove, since a replica rebuilt
// from the replicated log never saw the events the trim removed.
func (l *Log) trim(stream string, cut Cut, maxKeys int, pos uint64, floor ID) (Trimmed, error) {
	if maxKeys <= 0 {
		return Trimmed{}, fmt.Errorf("trim %s: maxKeys must be positive", stream)
	}
	var res Trimmed
	keys := make([]byte, 0, 16*min(maxKeys, 4096))
	err := l.update(func(tx *bolt.Tx) error {
		res = Trimmed{}
		keys = keys[:0]
		name := []byte(stream)
		st := tx.Bucket(bucketStreams)
		c := decodeCounters(st.Get(name))
		b := tx.Bucket(bucketEvents).Bucket(name)
		// finish records what a replica's last chunk must, with or without
		// events removed.
		finish := func() error {
			if err := putPosition(tx, pos); err != nil {
				return err
			}
			if err := raiseLast(tx, floor); err != nil {
				return err
			}
			if floor.Compare(c.LowWater) > 0 {
				c.LowWater = floor
				res.LowWater = floor
				return st.Put(name, c.encode())
			}
			return nil
		}
		if b == nil {
			return finish()
		}
		var count, size uint64
		res, count, size = cut.scan(b.Cursor(), c, maxKeys, func(k []byte) {
			// Keys alias pages that the deletes below rewrite: copy them.
			keys = append(keys, k...)
		})
		if res.Events == 0 {
			return finish()
		}
		for i := 0; i < len(keys); i += len(ID{}) {
			if err := b.Delete(keys[i : i+len(ID{})]); err != nil {
				return err
			}
		}
		c.Count, c.Bytes = count, size
		c.LowWater = res.LowWater
		if !res.More {
			if err := finish(); err != nil {
				return err
			}
		}
		return st.Put(name, c.encode())
	})
	if err != nil {
		return Trimmed{}, fmt.Errorf("trim %s: %w", stream, err)
	}
	if pos != 0 && !res.More {
		l.position.Store(pos)
		l.raisedLast(floor)
	}
	return res, nil
}
