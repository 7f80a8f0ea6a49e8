package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxConsecutiveErrors stops a publisher that keeps failing, so that a dead
// server ends the run instead of spinning.
const maxConsecutiveErrors = 10

type publishConfig struct {
	publishers int
	batch      int
	size       int
	duration   time.Duration
	events     int64
	keys       bool
}

func publishFlags(stderr io.Writer) (*flag.FlagSet, *common, workload) {
	fs, c := newFlagSet("publish", stderr, "Concurrent publishers POST events as fast as they are acknowledged, for --duration\nor until -n events. Reports events/s and the latency of acknowledged publishes.")
	p := &publishConfig{}
	fs.IntVar(&p.publishers, "c", 32, "concurrent publishers (one connection each)")
	fs.IntVar(&p.batch, "batch", 1, "events per request (1: one event object, more: an array; sselog only)")
	fs.IntVar(&p.size, "size", DefaultSize, "bytes of each event's data (compact JSON)")
	fs.DurationVar(&p.duration, "duration", 10*time.Second, "how long to publish (ignored with -n)")
	fs.Int64Var(&p.events, "n", 0, "publish this many events (rounded up to whole batches) instead of for --duration")
	fs.BoolVar(&p.keys, "idempotency", false, "send a new Idempotency-Key with every request (a repeat answer fails the run; sselog only)")
	return fs, c, func(ctx context.Context, e *env) (report, error) { return runPublish(ctx, e, p) }
}

type publishReport struct {
	runInfo
	Publishers     int     `json:"publishers"`
	Batch          int     `json:"batch"`
	Idempotency    bool    `json:"idempotency"`
	Size           int     `json:"size_bytes"`
	Duration       float64 `json:"duration_s"`
	Requests       int64   `json:"requests"`
	Events         int64   `json:"events"`
	Errors         int64   `json:"errors"`
	EventsPerSec   float64 `json:"events_per_s"`
	RequestsPerSec float64 `json:"requests_per_s"`
	latency
	FirstError string `json:"first_error,omitempty"`
}

func (r *publishReport) base() *runInfo { return &r.runInfo }

func (r *publishReport) rows() []row {
	keys := ""
	if r.Idempotency {
		keys = ", an Idempotency-Key on each request"
	}
	rows := []row{
		{"publishers", fmt.Sprintf("%d × batch %d, %d-byte data%s", r.Publishers, r.Batch, r.Size, keys)},
		{"duration", fmt.Sprintf("%.2f s", r.Duration)},
		{"events", fmtCount(r.Events)},
		{"requests", fmtCount(r.Requests)},
		{"errors", fmtCount(r.Errors)},
		{"throughput", fmtRate(r.EventsPerSec, "events") + " (" + fmtRate(r.RequestsPerSec, "requests") + ")"},
	}
	rows = append(rows, fmtLatency(r.latency)...)
	if r.FirstError != "" {
		rows = append(rows, row{"first error", r.FirstError})
	}
	return rows
}

// publisher is one worker's tally; each goroutine owns one.
type publisher struct {
	h        histogram
	requests int64
	errors   int64
	err      error
}

func runPublish(ctx context.Context, e *env, p *publishConfig) (report, error) {
	if p.publishers < 1 || p.batch < 1 || p.size < 0 || p.events < 0 {
		return nil, errors.New("publish: -c and --batch must be at least 1, --size and -n not negative")
	}
	if p.events == 0 && p.duration <= 0 {
		return nil, errors.New("publish: --duration must be positive (or give -n)")
	}
	if p.batch > 1 && !e.caps.batch {
		return nil, fmt.Errorf("publish --batch: %s publishes one event per request: %w", e.info.Target, errUnsupported)
	}
	if p.keys && !e.caps.idempotency {
		return nil, fmt.Errorf("publish --idempotency: %s takes no Idempotency-Key: %w", e.info.Target, errUnsupported)
	}
	b := newEventBuilder(p.size)
	body := e.t.a.appendPublish(nil, e.t.stream, b, p.batch, -1, -1, 1)
	limit := int64(-1) // requests, when -n is given
	if p.events > 0 {
		limit = (p.events + int64(p.batch) - 1) / int64(p.batch)
	}

	var (
		wg      sync.WaitGroup
		tickets atomic.Int64
		workers = make([]publisher, p.publishers)
	)
	// Keys are new on every run too, so a run against a server that kept
	// an earlier run's keys stores rather than replays.
	run := fmt.Sprintf("bench-%x", rand.Uint64())
	cpu := startCPU(e.pid)
	start := time.Now()
	end := start.Add(p.duration)
	for i := range workers {
		w := &workers[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			poster := newPoster(e.t, e.timeout)
			defer poster.close()
			var prefix []byte
			if p.keys {
				prefix = fmt.Appendf(nil, "%s-%d-", run, i)
			}
			failing := 0
			for ctx.Err() == nil {
				if limit >= 0 {
					if tickets.Add(1) > limit {
						return
					}
				} else if !time.Now().Before(end) {
					return
				}
				if prefix != nil {
					poster.key = strconv.AppendInt(append(poster.key[:0], prefix...), w.requests, 10)
				}
				t0 := time.Now()
				_, err := poster.publish(ctx, body)
				d := time.Since(t0)
				w.requests++
				if err != nil {
					w.errors++
					if w.err == nil {
						w.err = err
					}
					if failing++; failing >= maxConsecutiveErrors {
						return
					}
					continue
				}
				failing = 0
				w.h.record(int64(d))
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)

	r := &publishReport{runInfo: e.info, Publishers: p.publishers, Batch: p.batch, Idempotency: p.keys, Size: p.size, Duration: wall.Seconds()}
	cpu.stop(&r.runInfo)
	var h histogram
	for i := range workers {
		w := &workers[i]
		h.merge(&w.h)
		r.Requests += w.requests
		r.Errors += w.errors
		if w.err != nil && r.FirstError == "" {
			r.FirstError = w.err.Error()
		}
	}
	r.Events = h.n * int64(p.batch)
	r.EventsPerSec = float64(r.Events) / wall.Seconds()
	r.RequestsPerSec = float64(r.Requests) / wall.Seconds()
	r.latency = h.summary()
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if r.Errors > 0 {
		return r, fmt.Errorf("%w: %d of %d publishes failed; first: %s", ErrCheck, r.Errors, r.Requests, r.FirstError)
	}
	return r, nil
}
