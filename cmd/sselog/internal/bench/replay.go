package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// replayBuf sizes the replaying client's read buffers: one connection
// reading as fast as it can wants few, large reads.
const replayBuf = 64 << 10

// The phases of a replay run.
const (
	phaseAll  = "all"
	phaseLoad = "load"
	phaseRead = "read"
)

type replayConfig struct {
	events     int64
	size       int
	batch      int
	publishers int
	phase      string
	resume     bool  // resume when the server ends the stream
	dropEvery  int64 // events per connection before the tool drops it and resumes; 0: never
}

const replayHelp = `Publishes -n events (in batches where the server takes them, concurrently), then one
client subscribes from the start (sselog: Last-Event-ID 00000000000000000000000000;
Mercure: earliest) and reads until it has them all, or until the server shows it has no
more to send. Reports events/s received, and what is missing; every event must arrive
once (and where the server's ids are ordered, in id order).

How the read knows the server has no more: once each connection is registered, the tool
publishes a marker event to the stream. The server stores it after every event the
connection was to replay, so when it arrives, anything still missing was not going to
come. A stream the server ends counts what is missing the same way: the run fails on
missing events, not as an error of the tool.

--resume reconnects with Last-Event-ID (the last event received) when the server ends
the stream, as EventSource does; --drop-every also drops the connection after every so
many events and resumes, as over a flaky network.

--phase load publishes and stops; --phase read reads a stream loaded before (give its
--stream and the same -n), for example after restarting the server. The stream must hold
no events but the tool's: leave --stream unset for a whole run.`

func replayFlags(stderr io.Writer) (*flag.FlagSet, *common, workload) {
	fs, c := newFlagSet("replay", stderr, replayHelp)
	r := &replayConfig{}
	fs.Int64Var(&r.events, "n", 100_000, "events to publish and replay")
	fs.IntVar(&r.size, "size", DefaultSize, "bytes of each event's data (compact JSON)")
	fs.IntVar(&r.batch, "batch", 1000, "events per request while loading (1 where the server has no batch publish)")
	fs.IntVar(&r.publishers, "c", 4, "concurrent publishers while loading")
	fs.StringVar(&r.phase, "phase", phaseAll, "all: load, then read; load: only publish; read: only replay a stream loaded before (--stream)")
	fs.BoolVar(&r.resume, "resume", false, "when the server ends the stream, resume with Last-Event-ID, as EventSource does (default: its end ends the read)")
	fs.Int64Var(&r.dropEvery, "drop-every", 0, "drop the connection after every this many events and resume with Last-Event-ID (implies --resume; 0: never)")
	return fs, c, func(ctx context.Context, e *env) (report, error) { return runReplay(ctx, e, r) }
}

type replayReport struct {
	runInfo
	Phase           string  `json:"phase"`
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
	Resume          bool    `json:"resume"`
	DropEvery       int64   `json:"drop_every"`
	Connections     int64   `json:"connections"`
	// ServerEnded counts the connections the server ended before the read
	// was complete.
	ServerEnded int64 `json:"server_ended"`
	// Ended is how the read ended: complete, no-more (the marker arrived
	// with events missing), closed (the server ended the stream), error.
	Ended      string `json:"ended"`
	Missing    int64  `json:"missing"`
	Duplicates int64  `json:"duplicates"`
	// OrderChecked is false where the server's ids carry no order; then
	// Disordered is not counted.
	OrderChecked bool   `json:"order_checked"`
	Disordered   int64  `json:"ids_out_of_order"`
	Malformed    int64  `json:"malformed"`
	Errors       int64  `json:"errors"`
	FirstError   string `json:"first_error,omitempty"`
}

func (r *replayReport) base() *runInfo { return &r.runInfo }

// How a read ends (replayReport.Ended).
const (
	endComplete = "complete"
	endNoMore   = "no-more"
	endClosed   = "closed"
	endError    = "error"
	// endDropped is a connection the tool dropped (--drop-every); a read
	// never ends with it.
	endDropped = "dropped"
)

var endText = map[string]string{
	endComplete: "every event received",
	endNoMore:   "the server had no more: the marker published after the last connection opened arrived first",
	endClosed:   "the server ended the stream",
	endError:    "an error",
}

func (r *replayReport) rows() []row {
	var rows []row
	if r.Phase != phaseRead {
		rows = append(rows, row{"loaded", fmt.Sprintf("%s events of %d-byte data in %.2f s (%s)", fmtCount(r.Events), r.Size, r.LoadSeconds, fmtRate(r.LoadPerSec, "events"))})
	}
	if r.Phase == phaseLoad {
		return rows
	}
	conns := fmtCount(r.Connections)
	switch {
	case r.DropEvery > 0:
		conns += fmt.Sprintf(" (dropped after every %s events and resumed)", fmtCount(r.DropEvery))
	case r.Resume:
		conns += " (resuming when the server ends the stream)"
	}
	if r.ServerEnded > 0 {
		conns += fmt.Sprintf(", %s ended by the server", fmtCount(r.ServerEnded))
	}
	rows = append(rows,
		row{"received", fmt.Sprintf("%s of %s events, %s bytes in %.2f s (first after %.1f ms)", fmtCount(r.Received), fmtCount(r.Events), fmtCount(r.Bytes), r.Duration, r.FirstEventMs)},
		row{"connections", conns},
		row{"ended", endText[r.Ended]},
		row{"throughput", fmt.Sprintf("%s (%.1f MB/s)", fmtRate(r.EventsPerSec, "events"), r.MegabytesPerSec)},
		row{"missing", fmtCount(r.Missing)},
		row{"duplicates", fmtCount(r.Duplicates)},
		row{"ids out of order", fmtOrder(r.Disordered, r.OrderChecked, r.Target)},
		row{"errors", fmtCount(r.Errors + r.Malformed)},
	)
	if r.FirstError != "" {
		rows = append(rows, row{"first error", r.FirstError})
	}
	return rows
}

func runReplay(ctx context.Context, e *env, c *replayConfig) (report, error) {
	if c.events < 1 || c.batch < 1 || c.publishers < 1 || c.size < 0 || c.dropEvery < 0 {
		return nil, errors.New("replay: -n, --batch and -c must be positive, --size and --drop-every not negative")
	}
	if c.dropEvery > 0 {
		c.resume = true
	}
	if c.phase != phaseAll && c.phase != phaseLoad && c.phase != phaseRead {
		return nil, fmt.Errorf("replay: --phase must be %s, %s or %s, not %q", phaseAll, phaseLoad, phaseRead, c.phase)
	}
	r := &replayReport{runInfo: e.info, Phase: c.phase, Events: c.events, Size: c.size, Resume: c.resume, DropEvery: c.dropEvery, OrderChecked: e.caps.orderedIDs}
	if c.phase != phaseRead {
		loadStart := time.Now()
		if err := load(ctx, e, c); err != nil {
			return nil, fmt.Errorf("replay: loading: %w", err)
		}
		load := time.Since(loadStart)
		r.LoadSeconds, r.LoadPerSec = load.Seconds(), float64(c.events)/load.Seconds()
	}
	if c.phase == phaseLoad {
		return r, ctx.Err()
	}

	cpu := startCPU(e.pid)
	err := replay(ctx, e, c, r)
	cpu.stop(&r.runInfo)
	if err != nil {
		r.Errors++
		r.FirstError = err.Error()
		r.Ended = endError
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

// load publishes events numbered 0 to c.events-1 in batches (of one where
// the server has no batch publish), concurrently.
func load(ctx context.Context, e *env, c *replayConfig) error {
	b := newEventBuilder(c.size)
	batch := int64(e.t.maxBatch(c.batch))
	batches := (c.events + batch - 1) / batch
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
				from := k * batch
				count := min(batch, c.events-from)
				body = e.t.a.appendPublish(body[:0], e.t.stream, b, int(count), -1, from, 1)
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
