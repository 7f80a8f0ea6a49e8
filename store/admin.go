package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Backup writes a consistent copy of the whole database to w from one read
// transaction, while appends go on: the copy holds exactly what was
// committed when the transaction began. It returns the bytes written, which
// on success is the size the copy was announced with, BackupSize.
//
// The read transaction is held for the whole copy; while it is, the pages
// freed by trims are not reused and the file cannot be remapped, so a slow
// reader of a large database makes the file grow.
func (l *Log) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := l.view(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}

// openOffline opens a stopped server's database for an offline tool.
func openOffline(path string, readOnly bool) (*bolt.DB, error) {
	if err := checkFile(path); err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         DefaultOpenTimeout,
		ReadOnly:        readOnly,
		FreelistType:    bolt.FreelistMapType,
		PreLoadFreelist: true,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// CompactResult reports a compaction.
type CompactResult struct {
	Before, After int64 // file sizes in bytes
}

// Compact rewrites the database at src into a fresh file at dst, leaving out
// free pages: bbolt reuses the pages freed by trims and deletions but never
// shrinks its file. When dst is src, the copy is written beside it and
// renamed over it once synced, so the original is never half-written. The
// database must not be in use: a running server holds its lock.
func Compact(dst, src string) (res CompactResult, err error) {
	var (
		out     *bolt.DB
		tmp     string
		created bool // tmp is ours to remove on failure
	)
	// One deferred function, so that the clean-up sees the error a bbolt
	// panic on a damaged page turns into.
	oldFault := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(oldFault)
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: reading failed: %v", ErrCorrupt, src, p)
		}
		if err != nil && created {
			if out != nil {
				out.Close()
			}
			os.Remove(tmp)
		}
	}()
	in, err := openOffline(src, false)
	if err != nil {
		return res, err
	}
	defer in.Close()
	if st, err := os.Stat(src); err == nil {
		res.Before = st.Size()
	}
	inPlace := filepath.Clean(dst) == filepath.Clean(src)
	tmp = dst
	if inPlace {
		tmp = src + ".compacting"
		if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("compact: %w", err)
		}
	} else if _, err := os.Stat(dst); err == nil {
		return res, fmt.Errorf("compact: %s already exists", dst)
	}
	out, err = bolt.Open(tmp, 0o600, &bolt.Options{Timeout: DefaultOpenTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return res, fmt.Errorf("compact: create %s: %w", tmp, err)
	}
	created = true
	// 64 MiB per transaction bounds the copy's memory.
	if err := bolt.Compact(out, in, 64<<20); err != nil {
		return res, fmt.Errorf("compact %s: %w", src, err)
	}
	var size int64
	_ = out.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	closeErr := out.Close()
	out = nil
	if closeErr != nil {
		return res, fmt.Errorf("compact: close %s: %w", tmp, closeErr)
	}
	// bbolt grows a file in steps of up to 16 MiB; the step past the last
	// page is not part of the database.
	if err := truncateSync(tmp, size); err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	if inPlace {
		if err := os.Rename(tmp, src); err != nil {
			return res, fmt.Errorf("compact: %w", err)
		}
		created = false
	}
	if err := SyncDir(filepath.Dir(dst)); err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	res.After = st.Size()
	return res, nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// Report describes a database file for an operator, from `sselog inspect`.
type Report struct {
	Path      string            `json:"path"`
	FileSize  int64             `json:"file_size"`
	PageSize  int               `json:"page_size"`
	Pages     int64             `json:"pages"`
	FreePages int               `json:"free_pages"`
	LastID    ID                `json:"last_id"`
	LastTime  time.Time         `json:"last_time"`
	Streams   []StreamInfo      `json:"streams"`
	Deleted   []StreamInfo      `json:"deleted,omitempty"`
	Policies  map[string]Policy `json:"policies"`
}

// Inspect reads a stopped server's database without changing it.
func Inspect(path string) (r Report, err error) {
	defer guard(path, &err)()
	r = Report{Path: path, Policies: map[string]Policy{}}
	db, err := openOffline(path, true)
	if err != nil {
		return r, err
	}
	defer db.Close()
	if st, err := os.Stat(path); err == nil {
		r.FileSize = st.Size()
	}
	r.FreePages = db.Stats().FreePageN
	err = db.View(func(tx *bolt.Tx) error {
		r.PageSize = tx.DB().Info().PageSize
		r.Pages = tx.Size() / int64(r.PageSize)
		meta, events, streams := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents), tx.Bucket(bucketStreams)
		if meta == nil || events == nil || streams == nil {
			return fmt.Errorf("not an sselog database: %w", errCorrupt)
		}
		if v := meta.Get(keyLastID); len(v) == len(ID{}) {
			r.LastID = ID(v)
			r.LastTime = r.LastID.Time().UTC()
		}
		if err := streams.ForEach(func(k, v []byte) error {
			info := streamInfo(tx, k, v)
			if decodeCounters(v).Deleted {
				r.Deleted = append(r.Deleted, info)
			} else {
				r.Streams = append(r.Streams, info)
			}
			return nil
		}); err != nil {
			return err
		}
		return readPolicies(tx, r.Policies)
	})
	if err != nil {
		return r, fmt.Errorf("inspect %s: %w", path, err)
	}
	return r, nil
}
