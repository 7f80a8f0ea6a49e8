package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
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
	deadline    time.Duration // 0: publish every event, however late
	size        int
	merged      bool
	streams     int // 0: DefaultMergedStreams with merged
	perSub      int // 0: DefaultPerSubscriber with merged
}

// Defaults of the merged fan-out: issue 12's workload.
const (
	DefaultMergedStreams = 100
	DefaultPerSubscriber = 10
)

const fanoutHelp = `Subscribers connect first; then one publisher sends --rate events/s for --duration
(catching up in batches when behind, or one event per request to a server without batches;
with --deadline it gives up on what is still due then), each event carrying its send time
and sequence number.
Reports deliveries/s, publish-to-receive latency, and any gap or duplicate (there must be none).

With --merged the publisher spreads the events round-robin over --streams streams
(<stream>.0, <stream>.1, ...), and each subscriber follows --per-subscriber of them on one
connection to the merged endpoint, GET /v1/events?stream=...&stream=...: subscriber i takes
streams i, i+S/K, i+2S/K, ... (mod S, for S streams and K per subscriber), which covers the
streams evenly. Each subscriber checks that it receives exactly the events of its streams,
each stream's in order with no gap or duplicate, the merged feed's ids increasing, and every
envelope naming the stream its event was published to.`

func fanoutFlags(stderr io.Writer) (*flag.FlagSet, *common, workload) {
	fs, c := newFlagSet("fanout", stderr, fanoutHelp)
	f := &fanoutConfig{}
	fs.IntVar(&f.subscribers, "subscribers", 100, "concurrent subscribers")
	fs.Float64Var(&f.rate, "rate", 100, "events published per second")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to publish")
	fs.DurationVar(&f.deadline, "deadline", 0, "stop publishing this long after the start even with events still due, for a server that cannot keep up (0: publish them all, however long it takes)")
	fs.IntVar(&f.size, "size", 0, "pad each event's data to this many bytes (0: no padding, about 40 bytes)")
	fs.BoolVar(&f.merged, "merged", false, "spread the events over --streams streams and subscribe to --per-subscriber of them each, on /v1/events")
	fs.IntVar(&f.streams, "streams", 0, fmt.Sprintf("with --merged: streams the events are spread over (0: %d)", DefaultMergedStreams))
	fs.IntVar(&f.perSub, "per-subscriber", 0, fmt.Sprintf("with --merged: streams each subscriber follows, at most %d (0: %d)", maxPerSubscriber, DefaultPerSubscriber))
	return fs, c, func(ctx context.Context, e *env) (report, error) { return runFanout(ctx, e, f) }
}

type fanoutReport struct {
	runInfo
	Subscribers      int     `json:"subscribers"`
	Merged           bool    `json:"merged"`
	Streams          int     `json:"streams"`
	PerSubscriber    int     `json:"streams_per_subscriber"`
	Rate             float64 `json:"rate_per_s"`
	Size             int     `json:"size_bytes"`
	ConnectSeconds   float64 `json:"connect_s"`
	Asked            int64   `json:"asked"` // rate × duration
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
	Gaps       int64 `json:"gaps"`
	Duplicates int64 `json:"duplicates"`
	// OrderChecked is false where the server's ids carry no order; then
	// Disordered is not counted.
	OrderChecked bool   `json:"order_checked"`
	Disordered   int64  `json:"ids_out_of_order"`
	Malformed    int64  `json:"malformed"`
	Foreign      int64  `json:"foreign_events"` // events of streams the subscriber did not follow
	Errors       int64  `json:"errors"`
	Complete     bool   `json:"complete"`
	FirstError   string `json:"first_error,omitempty"`
}

func (r *fanoutReport) base() *runInfo { return &r.runInfo }

func (r *fanoutReport) rows() []row {
	rows := []row{
		{"subscribers", fmt.Sprintf("%s (connected in %.2f s)", fmtCount(int64(r.Subscribers)), r.ConnectSeconds)},
	}
	if r.Merged {
		rows = append(rows, row{"streams", fmt.Sprintf("%s.0 to %s.%d, %d per subscriber, merged on /v1/events", r.Stream, r.Stream, r.Streams-1, r.PerSubscriber)})
	}
	rows = append(rows,
		row{"published", fmt.Sprintf("%s of %s events in %.2f s at %g/s target, %s requests, p99 %.3f ms", fmtCount(r.Published), fmtCount(r.Asked), r.PublishSeconds, r.Rate, fmtCount(r.PublishRequests), r.PublishP99)},
		row{"deliveries", fmt.Sprintf("%s of %s in %.2f s", fmtCount(r.Deliveries), fmtCount(r.Expected), r.Duration)},
		row{"throughput", fmtRate(r.DeliveriesPerSec, "deliveries")},
	)
	rows = append(rows, fmtLatency(r.latency)...)
	rows = append(rows,
		row{"gaps", fmtCount(r.Gaps)},
		row{"duplicates", fmtCount(r.Duplicates)},
		row{"ids out of order", fmtOrder(r.Disordered, r.OrderChecked, r.Target)},
	)
	if r.Merged {
		rows = append(rows, row{"foreign events", fmtCount(r.Foreign)})
	}
	rows = append(rows, row{"errors", fmtCount(r.Errors + r.PublishErrors + r.Malformed)})
	if r.FirstError != "" {
		rows = append(rows, row{"first error", r.FirstError})
	}
	return rows
}

// follower is one fan-out subscriber's state, owned by its goroutine until
// the group is closed. lasts is also read by the drain, hence atomic.
type follower struct {
	h histogram
	// streams are the streams it follows, as indexes into layout.names;
	// lasts[k] is the highest sequence number received of streams[k], or
	// the one before its first event (streams[k] - S) before any.
	streams    []int64
	lasts      []atomic.Int64
	received   int64
	gaps       int64
	duplicates int64
	disordered int64
	malformed  int64
	foreign    int64
	lastAt     int64 // Unix nanoseconds of the last delivery
	lastID     []byte
	err        error
	dead       atomic.Bool // the connection failed before the group closed
}

// init sets s up to follow streams, none of whose events it has yet.
func (s *follower) init(streams []int64, stride int64) {
	s.streams = streams
	s.lasts = make([]atomic.Int64, len(streams))
	for k, j := range streams {
		s.lasts[k].Store(j - stride)
	}
}

// follow reads c until it fails, checking and timing every event. Event n
// belongs to stream n mod S, whose events are S apart: the next one after
// n is n+S.
func (s *follower) follow(g *group, c *sseConn, l *layout) {
	var f frame
	stride := l.stride()
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
		payload := f.data
		var name []byte
		if l.merged {
			var ok bool
			if name, payload, ok = parseEnvelope(f.data); !ok {
				s.malformed++
				continue
			}
		}
		n, okN := jsonInt(payload, seqKey)
		t, okT := jsonInt(payload, timeKey)
		if !okN || !okT || !f.hasID {
			s.malformed++
			continue
		}
		j := n % stride
		if l.merged && string(name) != l.names[j] {
			s.malformed++ // the envelope names another stream than the event's
			continue
		}
		k := slices.Index(s.streams, j)
		if k < 0 {
			s.foreign++
			continue
		}
		if l.ordered {
			if bytes.Compare(f.id, s.lastID) <= 0 {
				s.disordered++
			}
			s.lastID = append(s.lastID[:0], f.id...)
		}
		last := s.lasts[k].Load()
		if n <= last {
			s.duplicates++
			continue
		}
		s.gaps += (n-last)/stride - 1
		s.lasts[k].Store(n)
		s.received++
		s.lastAt = now
		s.h.record(now - t)
	}
}

// done reports whether s has the last of the sent events of each of its
// streams.
func (s *follower) done(l *layout, sent int64) bool {
	for k, j := range s.streams {
		if s.lasts[k].Load() < l.final(j, sent) {
			return false
		}
	}
	return true
}

func runFanout(ctx context.Context, e *env, f *fanoutConfig) (report, error) {
	if f.subscribers < 1 || f.rate <= 0 || f.duration <= 0 || f.size < 0 || f.deadline < 0 {
		return nil, errors.New("fanout: --subscribers, --rate and --duration must be positive, --size and --deadline not negative")
	}
	if f.merged && !e.caps.merged {
		return nil, fmt.Errorf("fanout --merged: %s has no merged subscriptions: %w", e.info.Target, errUnsupported)
	}
	l, err := newLayout(e.t.a, e.info.Stream, f)
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	total := int64(math.Round(f.rate * f.duration.Seconds()))
	if total < 1 {
		return nil, errors.New("fanout: --rate × --duration is less than one event")
	}
	followers := make([]follower, f.subscribers)
	for i := range followers {
		followers[i].init(l.streamsOf(i), l.stride())
	}
	var path func(i int) string
	if l.merged {
		path = l.subscribePath
	}
	connectStart := time.Now()
	g, err := openGroup(ctx, e, f.subscribers, path, func(g *group, i int, c *sseConn) { followers[i].follow(g, c, l) })
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	r := &fanoutReport{runInfo: e.info, Subscribers: f.subscribers, Merged: l.merged, Streams: len(l.names), PerSubscriber: l.perSub,
		Rate: f.rate, Size: f.size, ConnectSeconds: time.Since(connectStart).Seconds(), OrderChecked: l.ordered, Asked: total}

	cpu := startCPU(e.pid)
	start := time.Now()
	var deadline time.Time
	if f.deadline > 0 {
		deadline = start.Add(f.deadline)
	}
	pub := pace(ctx, newPoster(e.t, e.timeout), newEventBuilder(f.size), l, f.rate, total, start, deadline)
	r.Published, r.PublishRequests, r.PublishErrors = pub.sent, pub.requests, pub.errors
	r.PublishSeconds = time.Since(start).Seconds()
	r.PublishP99 = pub.h.summary().P99
	if pub.err != nil {
		r.FirstError = pub.err.Error()
	}

	// Drain: wait until every live subscriber has the last event of each
	// of its streams.
	r.Complete = drain(ctx, followers, l, pub.sent, e.timeout)
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
		r.Foreign += s.foreign
		for k, j := range s.streams {
			r.Expected += l.count(j, pub.sent)
			// Events never received at the end are gaps too.
			if last, final := s.lasts[k].Load(), l.final(j, pub.sent); last < final {
				r.Gaps += (final - last) / l.stride()
			}
		}
		if s.err != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = fmt.Sprintf("subscriber %d: %v", i, s.err)
			}
		}
		lastAt = max(lastAt, s.lastAt)
	}
	if lastAt > 0 {
		r.Duration = time.Duration(lastAt - start.UnixNano()).Seconds()
		r.DeliveriesPerSec = float64(r.Deliveries) / r.Duration
	}
	r.latency = h.summary()
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if bad := r.Gaps + r.Duplicates + r.Disordered + r.Malformed + r.Foreign + r.Errors + r.PublishErrors; bad > 0 || !r.Complete {
		return r, fmt.Errorf("%w: %d gaps, %d duplicates, %d ids out of order, %d malformed events, %d foreign events, %d subscriber errors, %d publish errors, complete %t",
			ErrCheck, r.Gaps, r.Duplicates, r.Disordered, r.Malformed, r.Foreign, r.Errors, r.PublishErrors, r.Complete)
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

// pace publishes total events numbered from 0 at rate events/s from start,
// event n to stream n mod S of l: on each tick it sends the events that
// fell due since the last request, in one request per stream (so that each
// stream's events go in order), each carrying the time its request was
// sent. Where the server has no batch publish, a tick sends at most one
// event per stream, and the next follows at once while events are due. It
// stops at the first failed publish: the events after it could not be told
// apart from gaps. The events of a tick that fails are not counted as
// sent, even those of its streams that went before. With a deadline it
// also stops, between ticks, once the deadline has passed.
func pace(ctx context.Context, pp *poster, b *eventBuilder, l *layout, rate float64, total int64, start, deadline time.Time) *paced {
	defer pp.close()
	p := &paced{}
	tick := max(time.Duration(float64(time.Second)/rate), minTick)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var body []byte
	a, perRequest := pp.t.a, int64(pp.t.maxBatch(maxCatchUp))
	for p.sent < total && (deadline.IsZero() || time.Now().Before(deadline)) {
		due := min(total, int64(time.Since(start).Seconds()*rate)+1)
		if due <= p.sent {
			select {
			case <-ticker.C:
			case <-ctx.Done():
				return p
			}
			continue
		}
		stride := l.stride()
		count := min(due-p.sent, maxCatchUp, stride*perRequest)
		end := p.sent + count
		for first := p.sent; first < min(end, p.sent+stride); first++ {
			// The stream's share of the due events: first, first+S, ...
			n := (end - first + stride - 1) / stride
			j := first % stride
			pp.to(l.paths[j])
			t0 := time.Now()
			body = a.appendPublish(body[:0], l.names[j], b, int(n), t0.UnixNano(), first, stride)
			_, err := pp.publish(ctx, body)
			p.requests++
			if err != nil {
				p.errors++
				p.err = fmt.Errorf("publisher: %w", err)
				return p
			}
			p.h.record(int64(time.Since(t0)))
		}
		p.sent = end
	}
	return p
}

// drain polls until every subscriber whose connection is alive has
// received the last of the sent events of each of its streams, or timeout
// passes; it reports whether all did.
func drain(ctx context.Context, followers []follower, l *layout, sent int64, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	from := 0 // followers before this one are done
	for {
		for from < len(followers) && (followers[from].dead.Load() || followers[from].done(l, sent)) {
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
