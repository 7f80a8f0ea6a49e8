package store

import (
	"context"
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
	// IdempotencyWindow is how long AppendOnce remembers a key, from the
	// time of the first request that used it. Zero means
	// DefaultIdempotencyWindow.
	IdempotencyWindow time.Duration
	// ObserveCommit, when set, is called by the writer after each commit
	// it attempts, with what the commit held and how long it took (the
	// bbolt transaction, fsync included). It must not block. Metrics use
	// it; nil costs nothing.
	ObserveCommit func(CommitStats)
	// Replica, when set, opens the file as a replica of the replicated
	// log it names (see Apply): a new file is stamped with it, and a file
	// stamped otherwise, or holding a standalone log, is refused with
	// ErrIdentity. Empty opens a standalone log, which refuses a replica's
	// file.
	Replica string
}

// CommitStats describes one commit of the writer.
type CommitStats struct {
	// Events is how many events the commit stored: zero for a commit that
	// failed, or whose appends were all repeats of idempotency keys.
	Events int
	Took   time.Duration
	Failed bool
}

// Log is the durable event log. It is safe for concurrent use.
type Log struct {
	db     *bolt.DB
	path   string
	logger *slog.Logger
	maxGrp int

	// closeMu orders the queue sends of Append and DeleteStream before
	// Close closes the queue.
	closeMu sync.RWMutex
	closed  bool
	queue   chan writeOp
	done    chan struct{} // closed when the writer has exited

	// live holds the names of the streams that exist (not deleted), kept
	// only when MaxStreams is set. Owned by the writer once Open returns.
	live   map[string]struct{}
	maxStr int

	observe func(CommitStats) // Options.ObserveCommit

	hooks    atomic.Pointer[[]func([]Event)]
	delHooks atomic.Pointer[[]func(stream string, lowWater ID)]
	last     atomic.Pointer[ID] // newest committed id

	now    func() time.Time
	window time.Duration // how long idempotency keys are remembered
	keys   *keyIndex

	replica  string        // Options.Replica
	position atomic.Uint64 // a replica's applied position
}

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
	if opts.IdempotencyWindow <= 0 {
		opts.IdempotencyWindow = DefaultIdempotencyWindow
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
		queue:  make(chan writeOp, opts.QueueLen),
		done:   make(chan struct{}),
		live:   make(map[string]struct{}),
		maxStr: opts.MaxStreams,
		now:    opts.Now,
		window: opts.IdempotencyWindow,
		keys:   newKeyIndex(),

		observe: opts.ObserveCommit,
		replica: opts.Replica,
	}
	var last ID
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		if last, err = prepareLayout(tx); err != nil {
			return err
		}
		pos, err := checkIdentity(tx, opts.Replica)
		if err != nil {
			return err
		}
		l.position.Store(pos)
		if err := l.loadKeys(tx); err != nil {
			return err
		}
		// live is kept only for MaxStreams: one entry per stream, not per
		// event, so cheap even for a large log.
		if l.maxStr > 0 {
			return tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
				if !decodeCounters(v).Deleted {
					l.live[string(k)] = struct{}{}
				}
				return nil
			})
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
	if l.replica != "" {
		return nil, ErrReplica
	}
	if err := ValidateStream(stream); err != nil {
		return nil, err
	}
	r, err := newAppendOp(stream, events)
	if err != nil {
		return nil, err
	}
	if err := l.run(ctx, r); err != nil {
		return nil, err
	}
	return r.ids(), nil
}

// newAppendOp validates events and copies them into an op for the writer.
func newAppendOp(stream string, events []Event) (*appendOp, error) {
	if len(events) == 0 {
		return nil, ErrEmptyBatch
	}
	r := &appendOp{stream: stream, events: make([]Event, len(events)), err: make(chan error, 1)}
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
	return r, nil
}

// run queues r and waits for the writer's answer or the end of ctx.
func (l *Log) run(ctx context.Context, r *appendOp) error {
	if err := l.enqueue(ctx, r); err != nil {
		return err
	}
	select {
	case err := <-r.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
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

// view runs fn in a read transaction, reporting ErrClosed after Close.
func (l *Log) view(fn func(*bolt.Tx) error) error {
	err := l.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// update runs fn in a write transaction beside the writer, reporting
// ErrClosed once Close has begun.
func (l *Log) update(fn func(*bolt.Tx) error) error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return l.db.Update(fn)
}
