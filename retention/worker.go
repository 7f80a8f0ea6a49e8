package retention

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sselog/sselog/store"
)

// Defaults for zero Options fields, and for the serve command's flags.
const (
	// DefaultMaxAge is the --retain-age flag's default. Options.Defaults
	// has no default of its own: its zero value keeps everything.
	DefaultMaxAge = 168 * time.Hour
	// DefaultInterval is the time between passes.
	DefaultInterval = time.Minute
	// DefaultChunk is how many events one trim transaction removes. Each
	// chunk is one fsynced write transaction that an append may queue
	// behind: at 2,000 keys it holds bbolt's writer for a few
	// milliseconds, and a pass removes a million events in well under a
	// minute (see TestPublishLatencyWhileTrimming).
	DefaultChunk = 2000
)

// Options configures New. The zero value is ready to use and trims nothing
// unless streams have overrides.
type Options struct {
	// Defaults are the server-wide limits, for every dimension a stream's
	// override leaves unset. The zero value means no limit at all; the
	// 168h age limit is the --retain-age flag's default (DefaultMaxAge),
	// not this field's.
	Defaults store.Limits
	// Interval is the time between the passes of Run. Zero or negative
	// means DefaultInterval.
	Interval time.Duration
	// Chunk is how many events one trim transaction removes at most. Zero
	// or negative means DefaultChunk.
	Chunk int
	// Now is the clock the age limit is measured against. Nil means
	// time.Now.
	Now func() time.Time
	// Logger receives a line for each pass that trimmed something and for
	// each pass of Run that failed. Nil discards them.
	Logger *slog.Logger
}

// Log is what the worker needs of the event log: *store.Log, or the
// jetstream backend's Log, whose Trim writes the cut through its cluster.
type Log interface {
	Streams() ([]store.StreamInfo, error)
	Policy(stream string) (store.Policy, error)
	Trim(stream string, cut store.Cut, maxKeys int) (store.Trimmed, error)
	ExpireKeys(now time.Time, maxKeys int) (removed int, more bool, err error)
}

// Worker applies retention to a log. RunOnce and Run are safe to call from
// several goroutines: passes never overlap.
type Worker struct {
	log      Log
	defaults store.Limits
	interval time.Duration
	chunk    int
	now      func() time.Time
	logger   *slog.Logger

	mu sync.Mutex // held for a whole pass

	removed atomic.Uint64 // events removed by every pass so far
}

// Removed reports how many events the worker's passes have removed.
func (w *Worker) Removed() uint64 { return w.removed.Load() }

// New returns a worker that trims log under opts. It starts nothing: call
// Run, or RunOnce.
func New(log Log, opts Options) *Worker {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Chunk <= 0 {
		opts.Chunk = DefaultChunk
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Worker{
		log:      log,
		defaults: opts.Defaults,
		interval: opts.Interval,
		chunk:    opts.Chunk,
		now:      opts.Now,
		logger:   opts.Logger,
	}
}

// Defaults returns the server-wide limits the worker applies where a
// stream has no override.
func (w *Worker) Defaults() store.Limits { return w.defaults }

// Stats is what one pass did.
type Stats struct {
	// Streams is how many streams the pass looked at.
	Streams int
	// StreamsTrimmed is how many of them lost at least one event.
	StreamsTrimmed int
	// Trimmed is how many events the pass removed, and Bytes their stored
	// size.
	Trimmed int
	Bytes   uint64
	// Transactions is how many trim and expiry transactions the pass
	// committed.
	Transactions int
	// KeysExpired is how many idempotency keys past their window the pass
	// removed.
	KeysExpired int
	// Took is the pass's duration, measured on the real clock (Options.Now
	// fixes only the cut points).
	Took time.Duration
}

// LogValue lets a Stats be logged as one group.
func (s Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("streams", s.Streams),
		slog.Int("streams_trimmed", s.StreamsTrimmed),
		slog.Int("events", s.Trimmed),
		slog.Uint64("bytes", s.Bytes),
		slog.Int("keys_expired", s.KeysExpired),
		slog.Int("transactions", s.Transactions),
		slog.Duration("took", s.Took),
	)
}

// RunOnce makes one pass over every stream: it takes one cut point from
// the clock for the whole pass, reads each stream's override, and trims
// each stream that is over its limits, in chunks of at most Options.Chunk
// events per transaction; then it removes the idempotency keys whose
// window ended by the same clock, in chunks of the same size. It checks ctx between chunks and returns ctx's error if it
// ended the pass early. An error trimming one stream does not stop the
// pass: the others are still trimmed and the errors are returned joined.
// Errors are returned, not logged.
func (w *Worker) RunOnce(ctx context.Context) (Stats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := time.Now()
	var st Stats
	err := w.pass(ctx, &st)
	st.Took = time.Since(start)
	w.removed.Add(uint64(st.Trimmed))
	return st, err
}

func (w *Worker) pass(ctx context.Context, st *Stats) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	streams, err := w.log.Streams()
	if err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	now := w.now()
	var errs []error
	for _, info := range streams {
		st.Streams++
		// Read per stream, not once per pass: a stream deleted and made
		// again during the pass has lost its old override.
		policy, err := w.log.Policy(info.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("read policy of %s: %w", info.Name, err))
			if errors.Is(err, store.ErrClosed) {
				break
			}
			continue
		}
		cut := w.defaults.Apply(policy).Cut(now)
		// Counters alone rule out most streams, without a write
		// transaction (see store.Cut.Selects).
		if !cut.Selects(info) {
			continue
		}
		n, err := w.trim(ctx, info.Name, cut, st)
		if n > 0 {
			st.StreamsTrimmed++
		}
		if err == nil {
			continue
		}
		errs = append(errs, err)
		if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
			break // nothing more can be done in this pass
		}
	}
	if ctx.Err() == nil && !errors.Is(errors.Join(errs...), store.ErrClosed) {
		if err := w.expireKeys(ctx, now, st); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// expireKeys removes the idempotency keys whose window ended by now, in
// chunks of the same size as a trim's, for the same reason.
func (w *Worker) expireKeys(ctx context.Context, now time.Time, st *Stats) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, more, err := w.log.ExpireKeys(now, w.chunk)
		if err != nil {
			return err
		}
		st.KeysExpired += n
		if n > 0 {
			st.Transactions++
		}
		if !more {
			return nil
		}
		runtime.Gosched()
	}
}

// trim removes what cut selects from stream, one chunk per transaction,
// and returns how many events it removed.
func (w *Worker) trim(ctx context.Context, stream string, cut store.Cut, st *Stats) (int, error) {
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		res, err := w.log.Trim(stream, cut, w.chunk)
		if err != nil {
			return n, err
		}
		st.Transactions++
		st.Trimmed += res.Events
		st.Bytes += res.Bytes
		n += res.Events
		if !res.More {
			return n, nil
		}
		// An append that queued for bbolt's write lock during the chunk has
		// just been woken; let it run before the next chunk takes the lock
		// again, rather than leave it to wait out a second chunk.
		runtime.Gosched()
	}
}

// Run makes a pass at once, then one every Interval, until ctx ends, when
// it returns nil. A pass that is running when ctx ends stops after its
// current chunk. Each pass that trimmed something is logged at Info, each
// failed pass at Error; a failed pass does not stop Run, except when the
// log was closed under it: Run then returns store.ErrClosed.
func (w *Worker) Run(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		st, err := w.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, store.ErrClosed):
			return fmt.Errorf("retention: %w", err)
		case err != nil:
			w.logger.Error("retention pass failed", "stats", st, "err", err)
		case st.Trimmed > 0 || st.KeysExpired > 0:
			w.logger.Info("retention pass", "stats", st)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
