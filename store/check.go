package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt is returned by Open, Inspect, Compact and Check for a file that
// is not a whole sselog database: too short, truncated, or with pages that
// do not check out. The file is left as it is.
var ErrCorrupt = errors.New("database file is damaged")

// bbolt's file header, as laid out in go.etcd.io/bbolt/internal/common: two
// meta pages at the start of the file, each a 16-byte page header followed
// by the meta fields, in the machine's byte order. bbolt does not export
// them; TestBoltHeaderLayout compares them with a file bbolt writes, so
// that an upgrade that moves them fails there, not in users' Open.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSumLen     = 56 // the meta fields before the checksum
	metaLen        = metaSumLen + 8
)

type boltMeta struct {
	pageSize uint32
	root     uint64 // the root bucket's page
	freelist uint64 // the freelist's page
	pgid     uint64 // the high-water mark: pages below it are in the file
	txid     uint64
}

// Page flags of bbolt's page header, and its "no freelist stored" id.
const (
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	noFreelist       = ^uint64(0)
)

func readMeta(b []byte) (boltMeta, bool) {
	if len(b) < pageHeaderSize+metaLen {
		return boltMeta{}, false
	}
	m := b[pageHeaderSize : pageHeaderSize+metaLen]
	e := binary.NativeEndian
	h := fnv.New64a()
	h.Write(m[:metaSumLen])
	if e.Uint32(m[0:]) != boltMagic || e.Uint32(m[4:]) != boltVersion || e.Uint64(m[metaSumLen:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: e.Uint32(m[8:]), root: e.Uint64(m[16:]), freelist: e.Uint64(m[32:]), pgid: e.Uint64(m[40:]), txid: e.Uint64(m[48:])}, true
}

// checkFile refuses, before bbolt maps it, a file that cannot be a whole
// database: bbolt would read past the end of a truncated file (a fault that
// kills the process) or initialise an empty one as a new database.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	m0, ok0 := readMeta(head[:n])
	if !ok0 {
		if size == 0 {
			return fmt.Errorf("%w: %s is empty; move it away to start a new database", ErrCorrupt, path)
		}
		// The first meta page may be the torn one; the second tells the
		// page size only if the first does, so try the usual sizes.
		for _, ps := range []int64{4096, 8192, 16384, 65536} {
			page := make([]byte, pageHeaderSize+metaLen)
			if _, err := f.ReadAt(page, ps); err == nil {
				if m, ok := readMeta(page); ok && int64(m.pageSize) == ps {
					m0, ok0 = m, true
					break
				}
			}
		}
		if !ok0 {
			return fmt.Errorf("%w: %s is not a bbolt database (no valid header)", ErrCorrupt, path)
		}
	}
	best := m0
	page := make([]byte, pageHeaderSize+metaLen)
	if _, err := f.ReadAt(page, int64(m0.pageSize)); err == nil {
		if m1, ok := readMeta(page); ok && m1.txid > best.txid {
			best = m1
		}
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return fmt.Errorf("%w: %s is truncated: %d bytes, its header needs %d", ErrCorrupt, path, size, need)
	}
	// bbolt reads these two pages on open, and panics if either is not
	// what the header says.
	flags := func(pgid uint64) uint16 {
		var h [pageHeaderSize]byte
		if pgid >= best.pgid {
			return 0
		}
		if _, err := f.ReadAt(h[:], int64(pgid)*int64(best.pageSize)); err != nil {
			return 0
		}
		return binary.NativeEndian.Uint16(h[8:])
	}
	if fl := flags(best.root); fl != branchPageFlag && fl != leafPageFlag {
		return fmt.Errorf("%w: %s: the root page %d is not a bucket page", ErrCorrupt, path, best.root)
	}
	if best.freelist != noFreelist && flags(best.freelist) != freelistPageFlag {
		return fmt.Errorf("%w: %s: the freelist page %d is not a freelist", ErrCorrupt, path, best.freelist)
	}
	return nil
}

// guard turns a panic or a memory fault while reading the file at path into
// ErrCorrupt in *err: bbolt panics on a page that is not what its parent
// says, and a damaged page can send it outside its memory map. Use as
// defer guard(path, &err)().
func guard(path string, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			*err = fmt.Errorf("%w: %s: reading failed: %v", ErrCorrupt, path, p)
		}
	}
}

// Check runs bbolt's consistency check over every page of the database at
// path, which must not be in use, reads every stored event, and compares
// what each stream holds with its entry in the streams bucket: the event
// count and stored bytes, the deletion tombstone, the low-water mark (no
// event at or below it) and the newest issued id (no event above it). It
// reports the problems found, wrapped in ErrCorrupt; a file without
// sselog's layout, with ErrNotLog; or nil.
func Check(path string) (err error) {
	if err := checkFile(path); err != nil {
		return err
	}
	defer guard(path, &err)()
	db, err := openOffline(path, true)
	if err != nil {
		return err
	}
	defer db.Close()
	// First a walk of every bucket, key and event in this goroutine, where
	// a page that is not what its parent says panics into guard; only then
	// bbolt's own check (page reachability, the freelist), which runs in a
	// goroutine of its own that nothing could recover.
	err = db.View(func(tx *bolt.Tx) error {
		if err := checkLayout(tx); err != nil {
			return fmt.Errorf("check %s: %w", path, err)
		}
		for _, name := range [][]byte{bucketStreams, bucketMeta, bucketPolicy} {
			if b := tx.Bucket(name); b != nil {
				if err := b.ForEach(func(k, v []byte) error { return nil }); err != nil {
					return err
				}
			}
		}
		if b := tx.Bucket(bucketIdem); b != nil {
			if err := b.ForEach(func(k, v []byte) error {
				if _, err := decodeKeyRecord(k, v); err != nil {
					return fmt.Errorf("%w: %s: the idempotency record %x is malformed", ErrCorrupt, path, k)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		held := make(map[string]*heldEvents)
		events := tx.Bucket(bucketEvents)
		var e Event
		err := events.ForEachBucket(func(name []byte) error {
			var prev []byte
			h := &heldEvents{}
			held[string(name)] = h
			return events.Bucket(name).ForEach(func(k, v []byte) error {
				if err := decodeValue(k, v, &e); err != nil || (prev != nil && string(prev) >= string(k)) {
					return fmt.Errorf("%w: %s: stream %s, key %x: %v", ErrCorrupt, path, name, k, err)
				}
				if e.Type == ResetType {
					// Possible only in a file from before the type was
					// reserved: clients would take it for sselog's notice.
					return fmt.Errorf("%w: %s: stream %s, id %s has the reserved type %q", ErrCorrupt, path, name, ID(k), ResetType)
				}
				if h.count == 0 {
					h.first = ID(k)
				}
				h.last = ID(k)
				h.count++
				h.bytes += uint64(len(v))
				prev = k
				return nil
			})
		})
		if err != nil {
			return err
		}
		if problems := compareCounters(tx, held); len(problems) > 0 {
			return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, strings.Join(problems, "; "))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		var problems []string
		found := 0
		// The channel must be drained: the check runs on in its goroutine.
		for e := range tx.Check() {
			if found++; found <= maxProblems {
				problems = append(problems, e.Error())
			}
		}
		if found > maxProblems {
			problems = append(problems, fmt.Sprintf("and %d more", found-maxProblems))
		}
		if len(problems) > 0 {
			return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, strings.Join(problems, "; "))
		}
		return nil
	})
}

// maxProblems bounds the problems Check lists; the rest are counted.
const maxProblems = 20

// heldEvents is what Check found stored in one stream.
type heldEvents struct {
	count, bytes uint64
	first, last  ID
}

// compareCounters compares every stream's entry in the streams bucket with
// the events held, which the writer, Trim and DeleteStream always change in
// one transaction, and returns the disagreements. Listing streams,
// retention and a client's gap notice all trust the entry, and the id
// generator trusts the newest issued id, so a file where either disagrees
// with the events (a streams bucket rebuilt over a partial copy of the
// events, say) is damaged even when every page checks out.
func compareCounters(tx *bolt.Tx, held map[string]*heldEvents) []string {
	var problems []string
	found := 0
	add := func(format string, args ...any) {
		if found++; found <= maxProblems {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var newest ID
	if v := tx.Bucket(bucketMeta).Get(keyLastID); len(v) == len(newest) {
		newest = ID(v)
	} else if v != nil {
		add("meta %s is %d bytes, want %d", keyLastID, len(v), len(newest))
	}
	names := make([]string, 0, len(held))
	for name := range held {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		// The next id is issued after the newest: an event above it would
		// be followed by smaller ids, which a resuming client skips.
		if h := held[name]; h.count > 0 && h.last.Compare(newest) > 0 {
			add("stream %s holds %s, after the newest issued id %s", name, h.last, idOrNone(newest))
		}
	}
	_ = tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
		h := held[string(k)]
		if h == nil {
			h = &heldEvents{}
		}
		delete(held, string(k))
		if len(v) < 16 {
			add("stream %s: its counters are %d bytes, want at least 16", k, len(v))
			return nil
		}
		c := decodeCounters(v)
		switch {
		case c.Deleted && h.count > 0:
			add("stream %s is marked deleted but holds %d events", k, h.count)
		case c.Count != h.count || c.Bytes != h.bytes:
			add("stream %s: its counters say %d events of %d bytes, it holds %d of %d bytes", k, c.Count, c.Bytes, h.count, h.bytes)
		}
		if h.count > 0 && h.first.Compare(c.LowWater) <= 0 {
			add("stream %s holds %s, at or below its low-water mark %s (every such event was removed)", k, h.first, c.LowWater)
		}
		if c.LowWater.Compare(newest) > 0 {
			add("stream %s: its low-water mark %s is after the newest issued id %s", k, c.LowWater, idOrNone(newest))
		}
		return nil
	})
	// What is left has events and no entry.
	for _, name := range names {
		if h := held[name]; h != nil && h.count > 0 {
			add("stream %s holds %d events (%d bytes) but has no counters", name, h.count, h.bytes)
		}
	}
	if found > maxProblems {
		problems = append(problems, fmt.Sprintf("and %d more", found-maxProblems))
	}
	return problems
}

// idOrNone shows an id in a message, "none" for the zero id.
func idOrNone(id ID) string {
	if id.IsZero() {
		return "none"
	}
	return id.String()
}
