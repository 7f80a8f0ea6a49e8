package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults for zero Options fields.
const (
	DefaultOpenTimeout     = time.Second
	DefaultInitialMmapSize = 256 << 20
	DefaultMaxGroupBytes   = 16 << 20
	DefaultQueueLen        = 4096
)

// Errors of the log's life cycle.
var (
	// ErrClosed is returned by Append and reads after Close.
	ErrClosed = errors.New("log is closed")
	// ErrLocked is returned by Open when another process holds the database.
	ErrLocked = errors.New("database is in use by another process")
	// ErrWrite wraps a failure to commit (disk full, an I/O error): nothing
	// of the failed transaction is stored or visible, and later writes may
	// succeed. Callers may retry.
	ErrWrite = errors.New("write to the database failed")
	// ErrTooManyStreams is returned by Append for a new stream when the
	// log already holds Options.MaxStreams streams.
	ErrTooManyStreams = errors.New("too many streams")
)

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Now is the clock ids are taken from. Nil means time.Now.
	Now func() time.Time
	// Logger receives the writer's errors. Nil discards them.
	Logger *slog.Logger
	// OpenTimeout bounds the wait for the database's file lock, so that a
	// second process fails fast. Zero means DefaultOpenTimeout.
	OpenTimeout time.Duration
	// InitialMmapSize is bbolt's initial memory map, in bytes; a map large
	// enough for the file means growth rarely remaps (a remap waits for every
	// read transaction). Zero means DefaultInitialMmapSize.
	InitialMmapSize int
	// MaxGroupBytes caps the stored bytes the writer puts in one transaction
	// when many appends are queued. A single append larger than this still
	// commits, alone. Zero means DefaultMaxGroupBytes.
	MaxGroupBytes int
	// QueueLen is how many appends may wait for the writer before Append
	// blocks. Zero means DefaultQueueLen.
	QueueLen int
	// MaxStreams caps how many streams the log holds: an Append that would
	// create one more fails with ErrTooManyStreams. Deleting a stream makes
	// room. Zero means no limit.
	MaxStreams int
}

// Log is the durable event log. It is safe for concurrent use.
type Log struct {
	db     *bolt.DB
	path   string
	logger *slog.Logger
	maxGrp int

	// closeMu orders Append's queue sends before Close closes the queue.
	closeMu sync.RWMutex
	closed  bool
	queue   chan *appendReq
	done    chan struct{} // closed when the writer has exited

	// live holds the names of the streams that exist (not deleted), kept
	// only when MaxStreams is set. Owned by the writer once Open returns.
	live   map[string]struct{}
	maxStr int

	hooks    atomic.Pointer[[]func([]Event)]
	delHooks atomic.Pointer[[]func(stream string, lowWater ID)]
	last     atomic.Pointer[ID] // newest committed id
}

type appendReq struct {
	stream string
	events []Event
	size   int
	err    chan error // buffered; the writer's one answer
	// refused is set by the writer for a request it does not commit.
	refused error
	// del makes the request a deletion of stream, committed alone and
	// answered with the stream's final low-water mark in lowWater.
	del      bool
	lowWater ID
}

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

// Open opens or creates the database at path. The parent directory must
// exist.
func Open(path string, opts Options) (_ *Log, err error) {
	// A page damaged past what checkFile sees makes bbolt panic while it
	// loads the freelist: refuse the file instead of crashing. (The file's
	// lock is then held until the process exits.)
	defer guard(path, &err)()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}
	if opts.InitialMmapSize <= 0 {
		opts.InitialMmapSize = DefaultInitialMmapSize
	}
	if opts.MaxGroupBytes <= 0 {
		opts.MaxGroupBytes = DefaultMaxGroupBytes
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultQueueLen
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	if !created {
		// Never let bbolt map a truncated file or initialise an emptied
		// one: refuse it, unchanged, with what is wrong.
		if err := checkFile(path); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         opts.OpenTimeout,
		InitialMmapSize: opts.InitialMmapSize,
		FreelistType:    bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return nil, fmt.Errorf("open database: %w", err) // already names the file
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if created {
		// bbolt fsyncs the file, never its directory: without this, a power
		// cut soon after start could lose the new file, acknowledged events
		// and all.
		if err := SyncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}
	l := &Log{
		db:     db,
		path:   path,
		logger: opts.Logger,
		maxGrp: opts.MaxGroupBytes,
		queue:  make(chan *appendReq, opts.QueueLen),
		done:   make(chan struct{}),
		live:   make(map[string]struct{}),
		maxStr: opts.MaxStreams,
	}
	var last ID
	err = db.Update(func(tx *bolt.Tx) error {
		// A file with no bucket is new (bbolt made it, or a run was killed
		// before its first commit) and gets the layout below. One with
		// buckets must already have it: adding the missing buckets to a
		// partial copy would serve it as a whole log.
		if k, _ := tx.Cursor().First(); k != nil {
			if err := checkLayout(tx); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bucketEvents, bucketStreams, bucketMeta, bucketPolicy} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		// live is kept only for MaxStreams: one entry per stream, not per
		// event, so cheap even for a large log.
		if l.maxStr > 0 {
			if err := tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
				if !decodeCounters(v).Deleted {
					l.live[string(k)] = struct{}{}
				}
				return nil
			}); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v == nil {
			if err := meta.Put(keyVersion, []byte{layoutVersion}); err != nil {
				return err
			}
		} else if len(v) == 1 && v[0] == 1 {
			if err := meta.Put(keyVersion, []byte{layoutVersion}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] != layoutVersion {
			return fmt.Errorf("unsupported layout version %v (this sselog knows 1 and %d)", v, layoutVersion)
		}
		if v := meta.Get(keyLastID); v != nil {
			if len(v) != len(last) {
				return fmt.Errorf("meta %s: %w", keyLastID, errCorrupt)
			}
			copy(last[:], v)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	l.last.Store(&last)
	l.hooks.Store(&[]func([]Event){})
	l.delHooks.Store(&[]func(string, ID){})
	gen := &generator{last: last, now: opts.Now}
	go l.writer(gen)
	return l, nil
}

// Path is the database file's path.
func (l *Log) Path() string { return l.path }

// LastID is the newest id committed, in any stream; zero for an empty log.
func (l *Log) LastID() ID { return *l.last.Load() }

// OnCommit registers fn to be called by the writer after every commit with
// the committed events in id order. Calls are sequential, in commit order,
// and happen before the appenders of that commit are answered. fn must not
// block or call Append, and must not modify or retain the events' Data
// beyond the call unless it copies it.
func (l *Log) OnCommit(fn func([]Event)) {
	for {
		old := l.hooks.Load()
		hooks := append(append([]func([]Event){}, *old...), fn)
		if l.hooks.CompareAndSwap(old, &hooks) {
			return
		}
	}
}

// Append appends events to stream in one transaction and returns their ids,
// in order, once that transaction is durable. The events' ID fields are
// ignored. Either all events are stored or, on error, none is
// acknowledged. If ctx ends first, Append returns ctx's error and the
// events may or may not be stored.
func (l *Log) Append(ctx context.Context, stream string, events []Event) ([]ID, error) {
	if err := ValidateStream(stream); err != nil {
		return nil, err
	}
	if len(events) == 0 {
		return nil, ErrEmptyBatch
	}
	r := &appendReq{stream: stream, events: make([]Event, len(events)), err: make(chan error, 1)}
	n := 0
	for i := range events {
		if err := events[i].validate(); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		n += len(events[i].Data)
	}
	// If ctx ends first, Append returns while the events are still queued,
	// and the caller owns its buffers again: queue a copy of the data.
	data := make([]byte, 0, n)
	for i := range events {
		start := len(data)
		data = append(data, events[i].Data...)
		r.events[i] = Event{Stream: stream, Type: events[i].Type, Data: data[start:len(data):len(data)]}
		r.size += events[i].encodedLen() + len(ID{})
	}
	if err := l.enqueue(ctx, r); err != nil {
		return nil, err
	}
	select {
	case err := <-r.err:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ids := make([]ID, len(r.events))
	for i := range r.events {
		ids[i] = r.events[i].ID
	}
	return ids, nil
}

func (l *Log) enqueue(ctx context.Context, r *appendReq) error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.queue <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer is the single goroutine that assigns ids and commits. It takes
// whatever is queued into one transaction: the group grows with the load
// while the previous fsync runs, and a lone append never waits.
func (l *Log) writer(gen *generator) {
	defer close(l.done)
	var (
		group   []*appendReq
		pending *appendReq // taken from the queue but over the group's size
		arena   []byte     // the group's stored values; bbolt keeps pointers into it until commit
		batch   []Event
	)
	for {
		group = group[:0]
		size := 0
		if pending != nil {
			group, size, pending = append(group, pending), pending.size, nil
		} else {
			r, ok := <-l.queue
			if !ok {
				return
			}
			group, size = append(group, r), r.size
		}
		if group[0].del {
			l.commitDelete(group[0])
			continue
		}
	drain:
		for size < l.maxGrp {
			select {
			case r, ok := <-l.queue:
				if !ok {
					break drain
				}
				if r.del || size+r.size > l.maxGrp {
					pending = r
					break drain
				}
				group, size = append(group, r), size+r.size
			default:
				break drain
			}
		}

		batch = batch[:0]
		if cap(arena) < size {
			arena = make([]byte, 0, size)
		}
		arena = arena[:0]
		created, admitted := l.admit(group)
		if admitted == 0 {
			for _, r := range group {
				r.err <- r.refused
			}
			continue
		}
		err := l.db.Update(func(tx *bolt.Tx) error {
			var last ID
			for _, r := range group {
				if r.refused != nil {
					continue
				}
				for i := range r.events {
					r.events[i].ID = gen.next()
				}
				last = r.events[len(r.events)-1].ID
				if err := putEvents(tx, r, &arena); err != nil {
					return err
				}
			}
			if last.IsZero() {
				return nil // every request was refused: nothing to commit
			}
			return tx.Bucket(bucketMeta).Put(keyLastID, last[:])
		})
		if err != nil {
			l.logger.Error("commit failed", "events", countEvents(group), "err", err)
			err = fmt.Errorf("append: %w: %w", ErrWrite, err)
			for _, name := range created {
				delete(l.live, name)
			}
		} else {
			for _, r := range group {
				if r.refused == nil {
					batch = append(batch, r.events...)
				}
			}
			if len(batch) > 0 {
				last := batch[len(batch)-1].ID
				l.last.Store(&last)
				for _, fn := range *l.hooks.Load() {
					fn(batch)
				}
			}
		}
		for _, r := range group {
			if r.refused != nil {
				r.err <- r.refused
			} else {
				r.err <- err
			}
		}
	}
}

// admit refuses, with ErrTooManyStreams, the requests of a group that
// would create a stream beyond MaxStreams, and returns the streams the rest
// create and how many requests it admitted.
func (l *Log) admit(group []*appendReq) (created []string, admitted int) {
	if l.maxStr <= 0 {
		return nil, len(group) // no limit, nothing to track
	}
	for _, r := range group {
		r.refused = nil
		if _, ok := l.live[r.stream]; ok {
			admitted++
			continue
		}
		// New in this group: put it in live now, and take it out again
		// if the commit fails, so that the check stays one map lookup.
		if l.maxStr > 0 && len(l.live) >= l.maxStr {
			r.refused = fmt.Errorf("%w: the limit is %d; delete one to make room", ErrTooManyStreams, l.maxStr)
			continue
		}
		l.live[r.stream] = struct{}{}
		created = append(created, r.stream)
		admitted++
	}
	return created, admitted
}

func countEvents(group []*appendReq) int {
	n := 0
	for _, r := range group {
		n += len(r.events)
	}
	return n
}

// putEvents stores one request's events and updates its stream's counters.
// Values are appended to arena, which has room for them all: bbolt requires
// a value to stay unchanged until the transaction ends, so no buffer is
// reused within one.
func putEvents(tx *bolt.Tx, r *appendReq, arena *[]byte) error {
	b, err := tx.Bucket(bucketEvents).CreateBucketIfNotExists([]byte(r.stream))
	if err != nil {
		return err
	}
	// Keys only ever grow, so full pages are never split again: pack them.
	b.FillPercent = 1.0
	var bytes uint64
	for i := range r.events {
		e := &r.events[i]
		start := len(*arena)
		*arena = e.appendValue(*arena)
		if err := b.Put(e.ID[:], (*arena)[start:len(*arena):len(*arena)]); err != nil {
			return err
		}
		bytes += uint64(len(*arena) - start)
	}
	st := tx.Bucket(bucketStreams)
	c := decodeCounters(st.Get([]byte(r.stream)))
	c.Count += uint64(len(r.events))
	c.Bytes += bytes
	c.Deleted = false
	return st.Put([]byte(r.stream), c.encode())
}

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

// Close stops accepting appends, commits those already queued, and closes
// the database.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return ErrClosed
	}
	l.closed = true
	close(l.queue)
	l.closeMu.Unlock()
	<-l.done
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", l.path, err)
	}
	return nil
}

// Ping reports ErrClosed once Close has begun, nil before.
func (l *Log) Ping() error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return nil
}

// SyncDir fsyncs the directory dir, which makes a file created or renamed in
// it survive a power cut: fsyncing the file alone does not.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
