package jetstream

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sselog/sselog/store"
)

// Defaults for zero Options fields.
const (
	DefaultStream   = "SSELOG"
	DefaultReplicas = 3
	DefaultTimeout  = 5 * time.Second
	// DefaultMaxBatch is JetStream's own limit on the messages of one
	// atomic batch: a group of at most this many requests never needs
	// more messages.
	DefaultMaxBatch = 1000
)

// Errors of this backend are the store's, so that the HTTP layer maps
// them without knowing the backend.
var (
	// ErrUnavailable is store.ErrUnavailable.
	ErrUnavailable = store.ErrUnavailable
	// ErrUnsupported is store.ErrUnsupported, returned by Backup:
	// JetStream's own snapshots back a cluster up.
	ErrUnsupported = store.ErrUnsupported
)

// Options configures Open.
type Options struct {
	// Conn is the connection to the NATS cluster (required).
	Conn *nats.Conn
	// Stream is the JetStream stream holding the log. Empty means
	// DefaultStream.
	Stream string
	// Replicas is the stream's replica count when Open creates it. Zero
	// means DefaultReplicas.
	Replicas int
	// Replica is the path of this node's local copy of the log (a bbolt
	// file, created if missing). Required.
	Replica string
	// Store configures the local copy; its Replica field is set by Open.
	Store store.Options
	// Timeout bounds one write's wait for the cluster. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxBatch caps the requests of one write. Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// ReclaimDelay is how long the storage of a trim or deletion is kept
	// in JetStream for copies that are behind (see reclaim.go). Zero means
	// DefaultReclaimDelay.
	ReclaimDelay time.Duration
	// Now is the clock ids take their time from. Nil means time.Now.
	Now func() time.Time
	// Logger receives the backend's errors. Nil discards them.
	Logger *slog.Logger
	// ObserveCommit, when set, is called after each write the writer sent
	// to the cluster, with how long the acknowledgement took.
	ObserveCommit func(store.CommitStats)
}

// Log is the event log on a JetStream stream, read from this node's local
// copy. It has the methods of *store.Log that the server's packages use.
type Log struct {
	opts   Options
	local  *store.Log
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	epoch  uint16
	logger *slog.Logger

	queue   chan *op
	answers chan answered // acknowledged writes, to the answerer

	// inflight is owned by the writer: its acknowledged writes that the
	// copy has not applied yet, oldest first.
	inflight []acked

	reclaims   reclaims
	reclaimNow chan struct{} // wakes the reclaimer; buffered, one slot

	wake   chan struct{} // wakes the applier; buffered, one slot
	target atomic.Uint64 // the newest position announced by a writer

	mu       sync.Mutex
	advance  chan struct{} // closed and replaced each time the position moves
	lost     chan struct{} // closed and replaced each time the connection drops
	applyErr error         // set when the applier stopped for good

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// Open connects the log to its JetStream stream, creating the stream if it
// does not exist, opens (or rebuilds) the local copy, and starts following
// the stream.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Conn == nil {
		return nil, errors.New("jetstream: Options.Conn is required")
	}
	if opts.Replica == "" {
		return nil, errors.New("jetstream: Options.Replica is required")
	}
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	if opts.Replicas <= 0 {
		opts.Replicas = DefaultReplicas
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReclaimDelay <= 0 {
		opts.ReclaimDelay = DefaultReclaimDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	js, err := jetstream.New(opts.Conn)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	st, epoch, err := ensureStream(ctx, js, opts)
	if err != nil {
		return nil, err
	}
	sopts := opts.Store
	sopts.Replica = fmt.Sprintf("jetstream:%s:%d", opts.Stream, epoch)
	local, err := store.Open(opts.Replica, sopts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: local copy: %w", err)
	}
	l := &Log{
		opts:    opts,
		local:   local,
		nc:      opts.Conn,
		js:      js,
		stream:  st,
		epoch:   epoch,
		logger:  opts.Logger,
		queue:   make(chan *op, 1024),
		answers: make(chan answered, 64),
		advance: make(chan struct{}),
		lost:    make(chan struct{}),
		wake:    make(chan struct{}, 1),

		reclaimNow: make(chan struct{}, 1),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if err := l.startApplier(ctx); err != nil {
		local.Close()
		return nil, err
	}
	l.wg.Add(4)
	go l.writer()
	go l.answerer()
	go l.watchConn()
	go l.reclaimer()
	// A node serves once its copy holds what the log held when it
	// started: before that every write would wait for it, and replays
	// would miss what it has not applied.
	if err := l.catchUp(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// catchUp waits until the local copy has applied the stream's last
// message as of now.
func (l *Log) catchUp(ctx context.Context) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("jetstream: stream %s: %w: %w", l.opts.Stream, ErrUnavailable, err)
	}
	last := info.State.LastSeq
	if pos := l.local.Position(); pos > last {
		// The stream lost writes this copy holds (restored from an older
		// snapshot, or a relaxed sync and a majority's power cut): the
		// copy's ids would be handed out again for other events.
		return fmt.Errorf("jetstream: this node's copy %s is at position %d, beyond the stream's last message %d: the stream was restored or lost writes; remove the copy to rebuild it from the stream", l.local.Path(), pos, last)
	} else if pos < last {
		l.logger.Info("catching up with the cluster's log", "position", pos, "last", last)
	}
	// Read at once, and again without pause while short of last.
	l.announced(last)
	if err := l.waitApplied(ctx, last); err != nil {
		return fmt.Errorf("jetstream: catching up to %d from %d: %w", last, l.local.Position(), err)
	}
	return nil
}

// ensureStream finds or creates the JetStream stream and returns its
// epoch, which a new stream draws at random.
//
// It waits as long as ctx lets it: a new cluster has no meta leader until
// a majority of its nodes are up, and cannot place the stream's replicas
// until as many nodes as Replicas are; nodes started one by one wait for
// each other, saying so every few seconds.
func ensureStream(ctx context.Context, js jetstream.JetStream, opts Options) (jetstream.Stream, uint16, error) {
	said := time.Now()
	waiting := func(err error) {
		if time.Since(said) > 5*time.Second {
			opts.Logger.Info("waiting for the cluster to place the log", "stream", opts.Stream, "replicas", opts.Replicas, "err", err)
			said = time.Now()
		}
	}
	for {
		// A request sent before the cluster has a meta leader is never
		// answered: each attempt gets its own short deadline.
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := js.Stream(actx, opts.Stream)
		acancel()
		if err == nil {
			cfg := st.CachedInfo().Config
			e, perr := strconv.ParseUint(cfg.Metadata[metaEpoch], 10, 16)
			if perr != nil || len(cfg.Subjects) != 1 || cfg.Subjects[0] != subjAll {
				return nil, 0, fmt.Errorf("jetstream: stream %s exists but was not made by sselog (subjects %v, epoch %q)", opts.Stream, cfg.Subjects, cfg.Metadata[metaEpoch])
			}
			return st, uint16(e), nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("jetstream: stream %s: %w: %w", opts.Stream, ErrUnavailable, err)
			}
			// A cluster still electing its meta leader answers with an
			// error for a while: retry until the deadline.
			waiting(err)
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return nil, 0, fmt.Errorf("jetstream: stream %s: %w: %w", opts.Stream, ErrUnavailable, err)
			}
		}
		// Neither 0 nor 0xffff: the bounds store.MinIDAt and
		// store.IDBefore put there are then never taken for this log's.
		var b [2]byte
		_, _ = rand.Read(b[:])
		epoch := 1 + binary.BigEndian.Uint16(b[:])%0xfffe
		actx, acancel = context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(actx, jetstream.StreamConfig{
			Name:               opts.Stream,
			Description:        "sselog event log",
			Subjects:           []string{subjAll},
			Storage:            jetstream.FileStorage,
			Replicas:           opts.Replicas,
			AllowAtomicPublish: true,
			// Each node's applier reads with batched direct gets, which
			// any replica answers.
			AllowDirect: true,
			Metadata:    map[string]string{metaEpoch: strconv.FormatUint(uint64(epoch), 10)},
		})
		acancel()
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// A cluster that is still forming has too few peers to place
			// the replicas: retry until the deadline.
			waiting(err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return nil, 0, fmt.Errorf("jetstream: create stream %s: %w", opts.Stream, err)
			}
		}
		// Created here or by another node at the same time: read it back,
		// so that every node takes the epoch that was stored.
	}
}

const metaEpoch = "sselog_epoch"

// Close stops the writer and the applier and closes the local copy. The
// connection stays the caller's.
func (l *Log) Close() error {
	err := store.ErrClosed
	l.closed.Do(func() {
		l.cancel()
		l.wg.Wait()
		err = l.local.Close()
	})
	return err
}

// watchConn closes lost each time the connection drops: a request sent
// before then may never be answered.
func (l *Log) watchConn() {
	defer l.wg.Done()
	ch := l.nc.StatusChanged(nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer l.nc.RemoveStatusListener(ch)
	for {
		select {
		case <-ch:
			l.mu.Lock()
			close(l.lost)
			l.lost = make(chan struct{})
			l.mu.Unlock()
		case <-l.ctx.Done():
			return
		}
	}
}

// connLost returns a channel closed when the connection next drops.
func (l *Log) connLost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// notify wakes whoever waits for the position to move.
func (l *Log) notify() {
	l.mu.Lock()
	close(l.advance)
	l.advance = make(chan struct{})
	l.mu.Unlock()
}

// waitApplied waits until the local copy has applied position seq, the
// context ends, or the applier stops.
func (l *Log) waitApplied(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		ch, aerr := l.advance, l.applyErr
		l.mu.Unlock()
		if l.local.Position() >= seq {
			return nil
		}
		if aerr != nil {
			return aerr
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.ctx.Done():
			return store.ErrClosed
		}
	}
}

// waitPast waits until the position is past pos.
func (l *Log) waitPast(ctx context.Context, pos uint64) error { return l.waitApplied(ctx, pos+1) }
