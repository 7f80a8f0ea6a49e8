package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sync/atomic"
	"time"
)

// Pacing of the fan-out publisher.
const (
	// minTick is the finest pacing step: at higher rates each tick
	// publishes the events that fell due since the last one, as a batch.
	minTick = time.Millisecond
	// maxCatchUp caps the events one catch-up request carries.
	maxCatchUp = 1000
	// pollEvery is how often the drain checks the subscribers' progress.
	pollEvery = 5 * time.Millisecond
)

type fanoutConfig struct {
	subscribers int
	rate        float64
	duration    time.Duration
	size        int
}

func fanoutFlags(stderr io.Writer) (*flag.FlagSet, *common, workload) {
	fs, c := newFlagSet("fanout", stderr, "Subscribers connect first; then one publisher sends --rate events/s for --duration\n(catching up in batches when behind), each event carrying its send time and sequence number.\nReports deliveries/s, publish-to-receive latency, and any gap or duplicate (there must be none).")
	f := &fanoutConfig{}
	fs.IntVar(&f.subscribers, "subscribers", 100, "concurrent subscribers")
	fs.Float64Var(&f.rate, "rate", 100, "events published per second")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to publish")
	fs.IntVar(&f.size, "size", 0, "pad each event's data to this many bytes (0: no padding, about 40 bytes)")
	return fs, c, func(ctx context.Context, e *env) (report, error) { return runFanout(ctx, e, f) }
}

type fanoutReport struct {
	runInfo
	Subscribers      int     `json:"subscribers"`
	Rate             float64 `json:"rate_per_s"`
	Size             int     `json:"size_bytes"`
	ConnectSeconds   float64 `json:"connect_s"`
	Published        int64   `json:"published"`
	PublishRequests  int64   `json:"publish_requests"`
	PublishErrors    int64   `json:"publish_errors"`
	PublishSeconds   float64 `json:"publish_s"`
	PublishP99       float64 `json:"publish_p99_ms"`
	Deliveries       int64   `json:"deliveries"`
	Expected         int64   `json:"expected_deliveries"`
	Duration         float64 `json:"duration_s"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	latency
	Gaps       int64  `json:"gaps"`
	Duplicates int64  `json:"duplicates"`
	Disordered int64  `json:"ids_out_of_order"`
	Malformed  int64  `json:"malformed"`
	Errors     int64  `json:"errors"`
	Complete   bool   `json:"complete"`
	FirstError string `json:"first_error,omitempty"`
}

func (r *fanoutReport) base() *runInfo { return &r.runInfo }

func (r *fanoutReport) rows() []row {
	rows := []row{
		{"subscribers", fmt.Sprintf("%s (connected in %.2f s)", fmtCount(int64(r.Subscribers)), r.ConnectSeconds)},
		{"published", fmt.Sprintf("%s events in %.2f s at %g/s target, %s requests, p99 %.3f ms", fmtCount(r.Published), r.PublishSeconds, r.Rate, fmtCount(r.PublishRequests), r.PublishP99)},
		{"deliveries", fmt.Sprintf("%s of %s in %.2f s", fmtCount(r.Deliveries), fmtCount(r.Expected), r.Duration)},
		{"throughput", fmtRate(r.DeliveriesPerSec, "deliveries")},
	}
	rows = append(rows, fmtLatency(r.latency)...)
	rows = append(rows,
		row{"gaps", fmtCount(r.Gaps)},
		row{"duplicates", fmtCount(r.Duplicates)},
		row{"ids out of order", fmtCount(r.Disordered)},
		row{"errors", fmtCount(r.Errors + r.PublishErrors + r.Malformed)},
	)
	if r.FirstError != "" {
		rows = append(rows, row{"first error", r.FirstError})
	}
	return rows
}

// follower is one fan-out subscriber's state, owned by its goroutine until
// the group is closed. last is also read by the drain, hence atomic.
type follower struct {
	h          histogram
	last       atomic.Int64 // highest sequence number received, -1 before any
	received   int64
	gaps       int64
	duplicates int64
	disordered int64
	malformed  int64
	lastAt     int64 // Unix nanoseconds of the last delivery
	lastID     []byte
	err        error
	dead       atomic.Bool // the connection failed before the group closed
}

// follow reads c until it fails, checking and timing every event.
func (s *follower) follow(g *group, c *sseConn) {
	var f frame
	last := int64(-1)
	for {
		if err := c.p.next(&f); err != nil {
			if !g.closed() {
				s.err = err
				s.dead.Store(true)
			}
			return
		}
		now := time.Now().UnixNano()
		if !f.hasData {
			continue
		}
		n, okN := jsonInt(f.data, seqKey)
		t, okT := jsonInt(f.data, timeKey)
		if !okN || !okT || !f.hasID {
			s.malformed++
			continue
		}
		if bytes.Compare(f.id, s.lastID) <= 0 {
			s.disordered++
		}
		s.lastID = append(s.lastID[:0], f.id...)
		if n <= last {
			s.duplicates++
			continue
		}
		s.gaps += n - last - 1
		last = n
		s.received++
		s.lastAt = now
		s.h.record(now - t)
		s.last.Store(n)
	}
}

func runFanout(ctx context.Context, e *env, f *fanoutConfig) (report, error) {
	if f.subscribers < 1 || f.rate <= 0 || f.duration <= 0 || f.size < 0 {
		return nil, errors.New("fanout: --subscribers, --rate and --duration must be positive, --size not negative")
	}
	total := int64(math.Round(f.rate * f.duration.Seconds()))
	if total < 1 {
		return nil, errors.New("fanout: --rate × --duration is less than one event")
	}
	followers := make([]follower, f.subscribers)
	for i := range followers {
		followers[i].last.Store(-1)
	}
	connectStart := time.Now()
	g, err := openGroup(ctx, e, f.subscribers, func(g *group, i int, c *sseConn) { followers[i].follow(g, c) })
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	r := &fanoutReport{runInfo: e.info, Subscribers: f.subscribers, Rate: f.rate, Size: f.size, ConnectSeconds: time.Since(connectStart).Seconds()}

	cpu := startCPU(e.pid)
	start := time.Now()
	pub := pace(ctx, newPoster(e.t, e.timeout), newEventBuilder(f.size), f.rate, total, start)
	r.Published, r.PublishRequests, r.PublishErrors = pub.sent, pub.requests, pub.errors
	r.PublishSeconds = time.Since(start).Seconds()
	r.PublishP99 = pub.h.summary().P99
	if pub.err != nil {
		r.FirstError = pub.err.Error()
	}

	// Drain: wait until every live subscriber has the last event.
	r.Complete = drain(ctx, followers, pub.sent-1, e.timeout)
	g.close()
	cpu.stop(&r.runInfo)

	var h histogram
	var lastAt int64
	for i := range followers {
		s := &followers[i]
		h.merge(&s.h)
		r.Deliveries += s.received
		r.Gaps += s.gaps
		r.Duplicates += s.duplicates
		r.Disordered += s.disordered
		r.Malformed += s.malformed
		// Events never received at the end are gaps too.
		if last := s.last.Load(); last < pub.sent-1 {
			r.Gaps += pub.sent - 1 - last
		}
		if s.err != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = fmt.Sprintf("subscriber %d: %v", i, s.err)
			}
		}
		lastAt = max(lastAt, s.lastAt)
	}
	r.Expected = pub.sent * int64(f.subscribers)
	if lastAt > 0 {
		r.Duration = time.Duration(lastAt - start.UnixNano()).Seconds()
		r.DeliveriesPerSec = float64(r.Deliveries) / r.Duration
	}
	r.latency = h.summary()
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if bad := r.Gaps + r.Duplicates + r.Disordered + r.Malformed + r.Errors + r.PublishErrors; bad > 0 || !r.Complete {
		return r, fmt.Errorf("%w: %d gaps, %d duplicates, %d ids out of order, %d malformed events, %d subscriber errors, %d publish errors, complete %t",
			ErrCheck, r.Gaps, r.Duplicates, r.Disordered, r.Malformed, r.Errors, r.PublishErrors, r.Complete)
	}
	return r, nil
}

// paced is the publisher's tally.
type paced struct {
	h        histogram
	sent     int64 // acknowledged events
	requests int64
	errors   int64
	err      error
}

// pace publishes total events numbered from 0 at rate events/s from start:
// on each tick it sends the events that fell due since the last request in
// one request, each carrying the time the request was sent. It stops at
// the first failed publish: the events after it could not be told apart
// from gaps.
func pace(ctx context.Context, pp *poster, b *eventBuilder, rate float64, total int64, start time.Time) *paced {
	defer pp.close()
	p := &paced{}
	tick := max(time.Duration(float64(time.Second)/rate), minTick)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var body []byte
	for p.sent < total {
		due := min(total, int64(time.Since(start).Seconds()*rate)+1)
		if due <= p.sent {
			select {
			case <-ticker.C:
			case <-ctx.Done():
				return p
			}
			continue
		}
		count := min(due-p.sent, maxCatchUp)
		t0 := time.Now()
		body = b.appendBatch(body[:0], int(count), t0.UnixNano(), p.sent)
		_, err := pp.publish(ctx, body)
		p.requests++
		if err != nil {
			p.errors++
			p.err = fmt.Errorf("publisher: %w", err)
			return p
		}
		p.h.record(int64(time.Since(t0)))
		p.sent += count
	}
	return p
}

// drain polls until every subscriber whose connection is alive has
// received event last, or timeout passes; it reports whether all did.
func drain(ctx context.Context, followers []follower, last int64, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	from := 0 // followers before this one are done
	for {
		for from < len(followers) && (followers[from].last.Load() >= last || followers[from].dead.Load()) {
			from++
		}
		if from == len(followers) {
			return true
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
