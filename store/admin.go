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
// committed when the transaction began. If size is not nil, it is called
// with the copy's size before the first byte is written, so that a caller
// can announce it (a Content-Length, say). Backup returns the bytes
// written, which on success equal that size.
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
// shrinks its file. The copy is written beside dst, to dst+".compacting",
// under the lock CreateTemp describes; it is synced, moved to dst, and the
// directory synced, so that dst never holds part of a database, however
// the run ends. When dst is src the move replaces the original; otherwise
// an existing dst is refused, and never replaced. A temporary file left by
// a killed run is taken over; one a live run is writing makes Compact fail
// with ErrBusy. The database must not be in use: a running server holds its
// lock (ErrLocked). A src that is not an sselog database is refused with
// ErrNotLog.
func Compact(dst, src string) (res CompactResult, err error) {
	var (
		out   *bolt.DB
		file  *os.File // the temporary file, out's own handle on it
		tmp   = dst + ".compacting"
		owned bool // tmp is ours and locked: remove it on failure
	)
	// One deferred function, so that the clean-up sees the error a bbolt
	// panic on a damaged page turns into.
	oldFault := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(oldFault)
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: reading failed: %v", ErrCorrupt, src, p)
		}
		if err != nil && owned {
			if !haveFlock && out != nil {
				// No lock to keep, and Windows removes no open file.
				out.Close()
				out = nil
			}
			// Otherwise before out.Close releases the lock: a run that
			// takes the name over afterwards must never lose its file to
			// this one.
			os.Remove(tmp)
		}
		if out != nil {
			// After a successful move the copy is synced and in place;
			// closing releases the lock and the map, and has nothing left
			// to lose.
			out.Close()
		}
	}()
	in, err := openOffline(src, false)
	if err != nil {
		return res, err
	}
	defer in.Close()
	if err := in.View(func(tx *bolt.Tx) error { return checkLayout(tx) }); err != nil {
		return res, fmt.Errorf("compact %s: %w", src, err)
	}
	if st, err := os.Stat(src); err == nil {
		res.Before = st.Size()
	}
	inPlace := filepath.Clean(dst) == filepath.Clean(src)
	if !inPlace {
		if _, err := os.Lstat(dst); err == nil {
			return res, fmt.Errorf("compact: %s already exists", dst)
		}
	}
	out, err = bolt.Open(tmp, 0o600, &bolt.Options{
		Timeout:      DefaultOpenTimeout,
		FreelistType: bolt.FreelistMapType,
		// openTemp locks the file and empties a dead run's leftover before
		// bbolt reads it; bbolt's own lock, taken on the same open file,
		// then holds at once. If bbolt fails after that, the empty file
		// stays for the next run to take over.
		OpenFile: func(name string, _ int, _ os.FileMode) (*os.File, error) {
			f, err := openTemp(name)
			file = f
			return f, err
		},
	})
	if errors.Is(err, ErrBusy) {
		return res, fmt.Errorf("compact: %w (another compaction into %s is running)", err, dst)
	}
	if err != nil {
		return res, fmt.Errorf("compact: create %s: %w", tmp, err)
	}
	owned = true
	// 64 MiB per transaction bounds the copy's memory.
	if err := bolt.Compact(out, in, 64<<20); err != nil {
		return res, fmt.Errorf("compact %s: %w", src, err)
	}
	var size int64
	_ = out.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	// bbolt grows a file in steps of up to 16 MiB; the step past the last
	// page is not part of the database. The file is cut and synced through
	// bbolt's handle, still open, so that the lock lasts until the copy is
	// in place: closing bbolt would release it.
	if haveFlock {
		err = truncateSync(file, size)
	} else {
		// No lock to keep, and Windows moves no open file: close first.
		err = out.Close()
		out = nil
		if err == nil {
			err = truncateSyncPath(tmp, size)
		}
	}
	if err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	// In place, the copy replaces the original; an --out never replaces
	// a file.
	err = moveTemp(tmp, dst, inPlace)
	if errors.Is(err, fs.ErrExist) {
		return res, fmt.Errorf("compact: %s appeared during the compaction", dst)
	}
	if err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	owned = false
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

func truncateSync(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

func truncateSyncPath(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return truncateSync(f, size)
}

// moveTemp moves the finished file tmp to dst. With replace it renames;
// without, it links and then removes tmp, so that a file created at dst
// meanwhile is refused, with an error wrapping fs.ErrExist, where a rename
// would replace it. A file system without hard links gets a check and a
// rename.
func moveTemp(tmp, dst string, replace bool) error {
	if t, err := os.Lstat(tmp); err == nil {
		if d, err := os.Lstat(dst); err == nil && os.SameFile(t, d) {
			// A run killed between its link and its remove left both
			// names on one file: rename would do nothing and keep tmp.
			return os.Remove(tmp)
		}
	}
	if replace {
		return os.Rename(tmp, dst)
	}
	err := os.Link(tmp, dst)
	switch {
	case errors.Is(err, fs.ErrExist):
		return err
	case err != nil:
		if _, err := os.Lstat(dst); err == nil {
			return &fs.PathError{Op: "move", Path: dst, Err: fs.ErrExist}
		}
		return os.Rename(tmp, dst)
	}
	return os.Remove(tmp)
}

// ErrBusy is returned by CreateTemp and Compact when a live process is
// writing the same temporary file: another backup or compaction to the same
// output. That run is left alone.
var ErrBusy = errors.New("another process is writing the temporary file")

// TempFile is an output being written under a temporary name in the
// directory of its final one, to be moved there only once it is whole. An
// exclusive lock (flock) on it, held from CreateTemp until Close or Remove,
// tells a live writer from a dead one: the kernel drops the lock of a
// process that dies, SIGKILL included, while its file stays.
type TempFile struct {
	*os.File
}

// CreateTemp creates path for writing, or takes over the file a killed
// writer left there, emptying it, and locks it. When a live process holds
// the lock it fails with ErrBusy and changes nothing. Where flock is not
// available (Windows, Solaris, AIX), an existing path is refused with
// ErrBusy, to be removed by hand if its writer is gone.
func CreateTemp(path string) (*TempFile, error) {
	f, err := openTemp(path)
	if err != nil {
		return nil, err
	}
	return &TempFile{File: f}, nil
}

// Share trades the exclusive lock for a shared one, so that a reader in
// this process can open the file (bbolt, for Inspect or Check, takes a
// shared lock on an open file of its own) while a new writer is still
// refused. flock does not promise to convert a lock atomically: if another
// process took the file in between, Share returns ErrBusy and the file is
// no longer this writer's: Close it, and do not Remove it.
func (t *TempFile) Share() error {
	ok, err := tryLock(t.File, false)
	if err != nil {
		return fmt.Errorf("lock %s: %w", t.Name(), err)
	}
	if !ok {
		return fmt.Errorf("%w: %s was taken over", ErrBusy, t.Name())
	}
	return nil
}

// Move moves the finished file to dst, closing it. With replace, an
// existing dst is replaced; without, it is refused with an error wrapping
// fs.ErrExist, even one created meanwhile, and the file stays for Remove.
// The lock is held until the file is at dst, so that a writer that opened
// it just before finds it gone (CreateTemp checks) instead of emptying a
// finished output. Where there is no flock, the file is closed first:
// there is no lock to keep, and Windows moves no open file.
func (t *TempFile) Move(dst string, replace bool) error {
	if !haveFlock {
		if err := t.Close(); err != nil {
			return err
		}
		return moveTemp(t.Name(), dst, replace)
	}
	if err := moveTemp(t.Name(), dst, replace); err != nil {
		return err
	}
	return t.Close()
}

// Remove removes the file and then closes it, in that order: the lock is
// held until the name is gone, so that a writer that takes the name over
// never loses its file to this one. Where there is no flock, the order is
// the other way round (Windows removes no open file), and a file already
// closed by Move is only removed.
func (t *TempFile) Remove() error {
	if !haveFlock {
		t.Close()
		return os.Remove(t.Name())
	}
	err := os.Remove(t.Name())
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	return err
}

// openTemp is CreateTemp's open: the file locked, and empty.
func openTemp(path string) (*os.File, error) {
	if !haveFlock {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: %s exists, from a run in progress or one that was killed (remove it if so)", ErrBusy, path)
		}
		return f, err
	}
	// Each retry means that the writer holding the file finished between
	// this open and this lock, moving or removing the file: the lock is
	// then on a file that is no longer at path, and emptying it would
	// destroy that writer's output.
	for range 8 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|openNoFollow, 0o600)
		if err != nil {
			return nil, err
		}
		ok, err := tryLock(f, true)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !ok {
			f.Close()
			return nil, fmt.Errorf("%w: %s", ErrBusy, path)
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		named, err := os.Lstat(path)
		if err == nil && os.SameFile(held, named) {
			if !held.Mode().IsRegular() || linkCount(held) > 1 {
				// Not only a leftover: a writer killed between linking
				// its file into place and removing this name left the
				// finished output under both. Emptying it would empty the
				// output: let go of this name, and start a new file.
				err := os.Remove(path)
				f.Close()
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
				continue
			}
			// What a dead writer left is not worth keeping: it was never
			// moved into place, so it was never whole.
			if err := f.Truncate(0); err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: %s keeps being replaced", ErrBusy, path)
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
		if err := checkLayout(tx); err != nil {
			return err
		}
		meta, streams := tx.Bucket(bucketMeta), tx.Bucket(bucketStreams)
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
