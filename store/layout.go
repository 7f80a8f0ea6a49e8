package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketEvents  = []byte("events")
	bucketStreams = []byte("streams")
	bucketMeta    = []byte("meta")
	bucketPolicy  = []byte("retention")
	keyLastID     = []byte("last_id")
	keyVersion    = []byte("version")
)

// layoutVersion 2 added the low-water mark and tombstone to the streams
// bucket, the retention bucket and the reserved "reset" type. A version 1
// file is upgraded in place on open (its 16-byte counters read as having no
// mark); a binary that knows only version 1 then refuses the file rather
// than drop the marks.
const layoutVersion = 2

// counters are a stream's entry in the streams bucket: running totals, so
// that listing streams never walks their events, and what retention and
// deletion removed, so that a client resuming from before it is told.
type counters struct {
	Count uint64
	Bytes uint64
	// LowWater is the newest id ever removed from the stream by a trim or
	// a deletion; every event at or below it is gone.
	LowWater ID
	// Deleted marks a stream removed by DeleteStream and not published to
	// since: its entry stays as a tombstone that keeps LowWater.
	Deleted bool
}

// countersLen is the stored size of counters. Entries written before the
// low-water mark existed are 16 bytes and decode with a zero one.
const countersLen = 8 + 8 + 16 + 1

func decodeCounters(v []byte) counters {
	if len(v) < 16 {
		return counters{}
	}
	c := counters{Count: binary.BigEndian.Uint64(v), Bytes: binary.BigEndian.Uint64(v[8:])}
	if len(v) >= countersLen {
		copy(c.LowWater[:], v[16:32])
		c.Deleted = v[32]&1 != 0
	}
	return c
}

func (c counters) encode() []byte {
	v := make([]byte, countersLen)
	binary.BigEndian.PutUint64(v, c.Count)
	binary.BigEndian.PutUint64(v[8:], c.Bytes)
	copy(v[16:32], c.LowWater[:])
	if c.Deleted {
		v[32] = 1
	}
	return v
}

// ErrNotLog is returned by Open, Inspect, Compact and Check for a bbolt file
// that holds buckets but not sselog's layout (the events, streams and meta
// buckets and a layout version): another program's database, or a partial
// copy, such as the output of a compaction killed before it finished used
// to be. Open does not add what is missing, which would pass the file off
// as a log that had lost nothing, and leaves the file as it is.
var ErrNotLog = errors.New("not an sselog database")

// checkLayout refuses, with ErrNotLog, a database without the buckets and
// version every sselog file has had since its first transaction. Open
// calls it only for a file holding some bucket: one with none is new.
func checkLayout(tx *bolt.Tx) error {
	var missing []string
	for _, name := range [][]byte{bucketEvents, bucketStreams, bucketMeta} {
		if tx.Bucket(name) == nil {
			missing = append(missing, fmt.Sprintf("bucket %q", name))
		}
	}
	if meta := tx.Bucket(bucketMeta); meta == nil || meta.Get(keyVersion) == nil {
		missing = append(missing, "a layout version")
	}
	if len(missing) == 0 {
		return nil
	}
	var held []string
	_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if held = append(held, fmt.Sprintf("%q", name)); len(held) == 10 {
			held = append(held, "...")
			return errStop
		}
		return nil
	})
	what := "no buckets"
	switch {
	case len(held) == 1:
		what = "bucket " + held[0]
	case len(held) > 1:
		what = "buckets " + strings.Join(held, ", ")
	}
	return fmt.Errorf("%w: it holds %s and lacks %s (another program's file, or a partial copy; sselog does not add what is missing)",
		ErrNotLog, what, strings.Join(missing, ", "))
}

// errStop ends a ForEach early.
var errStop = errors.New("stop")

// prepareLayout gives a new file sselog's layout, refuses a file with
// buckets but not that layout, upgrades a version 1 file in place, and
// returns the newest issued id.
func prepareLayout(tx *bolt.Tx) (last ID, err error) {
	// A file with no bucket is new (bbolt made it, or a run was killed
	// before its first commit) and gets the layout below. One with
	// buckets must already have it: adding the missing buckets to a
	// partial copy would serve it as a whole log.
	if k, _ := tx.Cursor().First(); k != nil {
		if err := checkLayout(tx); err != nil {
			return ID{}, err
		}
	}
	// The idempotency bucket came after version 2 without a new version:
	// a binary that does not know it leaves it alone, and one that does
	// adds it to a file made before it.
	for _, name := range [][]byte{bucketEvents, bucketStreams, bucketMeta, bucketPolicy, bucketIdem} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return ID{}, err
		}
	}
	meta := tx.Bucket(bucketMeta)
	// A new file is stamped; a version 1 file is upgraded by the same
	// stamp (its counters read as having no mark).
	if v := meta.Get(keyVersion); v == nil || len(v) == 1 && v[0] == 1 {
		if err := meta.Put(keyVersion, []byte{layoutVersion}); err != nil {
			return ID{}, err
		}
	} else if len(v) != 1 || v[0] != layoutVersion {
		return ID{}, fmt.Errorf("unsupported layout version %v (this sselog knows 1 and %d)", v, layoutVersion)
	}
	if v := meta.Get(keyLastID); v != nil {
		if len(v) != len(last) {
			return ID{}, fmt.Errorf("meta %s: %w", keyLastID, errCorrupt)
		}
		copy(last[:], v)
	}
	return last, nil
}
