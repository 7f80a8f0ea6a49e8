package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt is returned by Open, Inspect, Compact and Check for a file that
// is not a whole sselog database: too short, truncated, or with pages that
// do not check out. The file is left as it is.
var ErrCorrupt = errors.New("database file is damaged")

// bbolt's file header, as laid out in go.etcd.io/bbolt/internal/common: two
// meta pages at the start of the file, each a 16-byte page header followed
// by the meta fields, in the machine's byte order.
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
// path, which must not be in use, and then reads every stored event. It
// reports the problems found, wrapped in ErrCorrupt, or nil.
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
		events := tx.Bucket(bucketEvents)
		if events == nil || tx.Bucket(bucketStreams) == nil || tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("%w: %s is not an sselog database", ErrCorrupt, path)
		}
		for _, name := range [][]byte{bucketStreams, bucketMeta, bucketPolicy} {
			if b := tx.Bucket(name); b != nil {
				if err := b.ForEach(func(k, v []byte) error { return nil }); err != nil {
					return err
				}
			}
		}
		var e Event
		return events.ForEachBucket(func(name []byte) error {
			var prev []byte
			return events.Bucket(name).ForEach(func(k, v []byte) error {
				if err := decodeValue(k, v, &e); err != nil || (prev != nil && string(prev) >= string(k)) {
					return fmt.Errorf("%w: %s: stream %s, key %x: %v", ErrCorrupt, path, name, k, err)
				}
				if e.Type == ResetType {
					// Possible only in a file from before the type was
					// reserved: clients would take it for sselog's notice.
					return fmt.Errorf("%w: %s: stream %s, id %s has the reserved type %q", ErrCorrupt, path, name, ID(k), ResetType)
				}
				prev = k
				return nil
			})
		})
	})
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		var problems []string
		found := 0
		// The channel must be drained: the check runs on in its goroutine.
		for e := range tx.Check() {
			if found++; found <= 20 {
				problems = append(problems, e.Error())
			}
		}
		if found > 20 {
			problems = append(problems, fmt.Sprintf("and %d more", found-20))
		}
		if len(problems) > 0 {
			return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, strings.Join(problems, "; "))
		}
		return nil
	})
}
