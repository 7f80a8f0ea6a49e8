package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// zeroID asks for the whole stream.
const zeroID = "00000000000000000000000000"

// replayBuf sizes the replaying client's read buffers: one connection
// reading as fast as it can wants few, large reads.
const replayBuf = 64 << 10

type replayConfig struct {
	events     int64
	size       int
	batch      int
	publishers int
}

func replayFlags(stderr io.Writer) (*flag.FlagSet, *common, workload) {
	fs, c := newFlagSet("replay", stderr, "Publishes -n events (in batches, concurrently), then one client subscribes from the\nstart (Last-Event-ID 00000000000000000000000000) and reads until it has them all.\nReports events/s received; every event must arrive once, ids in order.\nThe stream must hold no other events: leave --stream unset.")
	r := &replayConfig{}
	fs.Int64Var(&r.events, "n", 100_000, "events to publish and replay")
	fs.IntVar(&r.size, "size", DefaultSize, "bytes of each event's data (compact JSON)")
	fs.IntVar(&r.batch, "batch", 1000, "events per request while loading")
	fs.IntVar(&r.publishers, "c", 4, "concurrent publishers while loading")
	return fs, c, func(ctx context.Context, e *env) (report, error) { return runReplay(ctx, e, r) }
}

type replayReport struct {
	runInfo
	Events          int64   `json:"events"`
	Size            int     `json:"size_bytes"`
	LoadSeconds     float64 `json:"load_s"`
	LoadPerSec      float64 `json:"load_events_per_s"`
	Received        int64   `json:"received"`
	Bytes           int64   `json:"bytes"`
	FirstEventMs    float64 `json:"first_event_ms"`
	Duration        float64 `json:"duration_s"`
	EventsPerSec    float64 `json:"events_per_s"`
	MegabytesPerSec float64 `json:"mb_per_s"`
	Missing         int64   `json:"missing"`
	Duplicates      int64   `json:"duplicates"`
	Disordered      int64   `json:"ids_out_of_order"`
	Malformed       int64   `json:"malformed"`
	Errors          int64   `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
}

func (r *replayReport) base() *runInfo { return &r.runInfo }

func (r *replayReport) rows() []row {
	rows := []row{
		{"loaded", fmt.Sprintf("%s events of %d-byte data in %.2f s (%s)", fmtCount(r.Events), r.Size, r.LoadSeconds, fmtRate(r.LoadPerSec, "events"))},
		{"received", fmt.Sprintf("%s events, %s bytes in %.2f s (first after %.1f ms)", fmtCount(r.Received), fmtCount(r.Bytes), r.Duration, r.FirstEventMs)},
		{"throughput", fmt.Sprintf("%s (%.1f MB/s)", fmtRate(r.EventsPerSec, "events"), r.MegabytesPerSec)},
		{"missing", fmtCount(r.Missing)},
		{"duplicates", fmtCount(r.Duplicates)},
		{"ids out of order", fmtCount(r.Disordered)},
		{"errors", fmtCount(r.Errors + r.Malformed)},
	}
	if r.FirstError != "" {
		rows = append(rows, row{"first error", r.FirstError})
	}
	return rows
}

func runReplay(ctx context.Context, e *env, c *replayConfig) (report, error) {
	if c.events < 1 || c.batch < 1 || c.publishers < 1 || c.size < 0 {
		return nil, errors.New("replay: -n, --batch and -c must be positive, --size not negative")
	}
	r := &replayReport{runInfo: e.info, Events: c.events, Size: c.size}
	loadStart := time.Now()
	if err := load(ctx, e, c); err != nil {
		return nil, fmt.Errorf("replay: loading: %w", err)
	}
	load := time.Since(loadStart)
	r.LoadSeconds, r.LoadPerSec = load.Seconds(), float64(c.events)/load.Seconds()

	cpu := startCPU(e.pid)
	err := replay(ctx, e, c.events, r)
	cpu.stop(&r.runInfo)
	if err != nil {
		r.Errors++
		r.FirstError = err.Error()
	}
	if r.Duration > 0 {
		r.EventsPerSec = float64(r.Received) / r.Duration
		r.MegabytesPerSec = float64(r.Bytes) / r.Duration / 1e6
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if bad := r.Missing + r.Duplicates + r.Disordered + r.Malformed + r.Errors; bad > 0 {
		return r, fmt.Errorf("%w: %d missing, %d duplicates, %d ids out of order, %d malformed, %d errors", ErrCheck, r.Missing, r.Duplicates, r.Disordered, r.Malformed, r.Errors)
	}
	return r, nil
}

// load publishes events numbered 0 to c.events-1 in batches, concurrently.
func load(ctx context.Context, e *env, c *replayConfig) error {
	b := newEventBuilder(c.size)
	batches := (c.events + int64(c.batch) - 1) / int64(c.batch)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range c.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pp := newPoster(e.t, e.timeout)
			defer pp.close()
			var body []byte
			for {
				k := next.Add(1) - 1
				if k >= batches || ctx.Err() != nil {
					return
				}
				from := k * int64(c.batch)
				count := min(int64(c.batch), c.events-from)
				body = b.appendBatch(body[:0], int(count), -1, from)
				if _, err := pp.publish(ctx, body); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					next.Store(batches) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// replay subscribes from the start and reads until it has every event
// numbered below events, filling in r's counts and timings.
func replay(ctx context.Context, e *env, events int64, r *replayReport) error {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	start := time.Now()
	c, err := dialSSE(ctx, e.t, e.t.eventsPath, zeroID, replayBuf)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.conn.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.Close() }) // a cancelled run ends the read
	defer stop()

	seen := make([]uint64, (events+63)/64)
	var (
		f      frame
		lastID []byte
		unique int64
		lastAt time.Time
	)
	defer func() {
		r.Missing = events - unique
		r.Bytes = c.p.bytes
		if lastAt.IsZero() { // ended early
			lastAt = time.Now()
		}
		r.Duration = lastAt.Sub(start).Seconds()
	}()
	for unique < events {
		if err := c.p.next(&f); err != nil {
			return fmt.Errorf("after %d events: %w", r.Received, err)
		}
		if !f.hasData {
			continue
		}
		if r.Received == 0 {
			r.FirstEventMs = float64(time.Since(start)) / float64(time.Millisecond)
		}
		r.Received++
		n, ok := jsonInt(f.data, seqKey)
		if !ok || n >= events || !f.hasID {
			r.Malformed++
			continue
		}
		if bytes.Compare(f.id, lastID) <= 0 {
			r.Disordered++
		}
		lastID = append(lastID[:0], f.id...)
		if seen[n/64]&(1<<(n%64)) != 0 {
			r.Duplicates++
			continue
		}
		seen[n/64] |= 1 << (n % 64)
		unique++
		if unique == events {
			lastAt = time.Now()
		}
	}
	return nil
}
