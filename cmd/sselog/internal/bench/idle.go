package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Settling of the resident memory readings.
const (
	settleEvery   = 250 * time.Millisecond
	settleSamples = 4         // consecutive samples that must agree
	settleBytes   = 256 << 10 // they agree when within this, or
	settleRatio   = 0.005     // this fraction of the reading, whichever is larger
)

type idleConfig struct {
	subscribers int
	hold        time.Duration
}

func idleFlags(stderr io.Writer) (*flag.FlagSet, *common, workload) {
	fs, c := newFlagSet("idle", stderr, "Opens --subscribers idle subscriptions and reports the server's resident memory per\nsubscriber: (VmRSS with them - VmRSS before) / subscribers, each reading taken once it\nhas settled. Needs the server's process: --spawn, or --pid for a server started by hand.")
	i := &idleConfig{}
	fs.IntVar(&i.subscribers, "subscribers", 1000, "idle subscribers to open")
	fs.DurationVar(&i.hold, "duration", 0, "keep the subscribers open at least this long before measuring (heartbeats run meanwhile)")
	return fs, c, func(ctx context.Context, e *env) (report, error) { return runIdle(ctx, e, i) }
}

type idleReport struct {
	runInfo
	Subscribers    int     `json:"subscribers"`
	ConnectSeconds float64 `json:"connect_s"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSAfter       int64   `json:"rss_after_bytes"`
	PerSubscriber  float64 `json:"rss_per_subscriber_bytes"`
	Settled        bool    `json:"settled"`
	SettleSeconds  float64 `json:"settle_s"`
	ClientRSS      int64   `json:"client_rss_bytes"`
	Errors         int64   `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
}

func (r *idleReport) base() *runInfo { return &r.runInfo }

func (r *idleReport) rows() []row {
	settled := "settled"
	if !r.Settled {
		settled = "still moving at the deadline"
	}
	rows := []row{
		{"subscribers", fmt.Sprintf("%s (connected in %.2f s)", fmtCount(int64(r.Subscribers)), r.ConnectSeconds)},
		{"server rss before", fmtBytes(r.RSSBefore)},
		{"server rss with them", fmt.Sprintf("%s (%s after %.1f s)", fmtBytes(r.RSSAfter), settled, r.SettleSeconds)},
		{"per subscriber", fmt.Sprintf("%.1f KB", r.PerSubscriber/1024)},
		{"client rss", fmtBytes(r.ClientRSS)},
		{"errors", fmtCount(r.Errors)},
	}
	if r.FirstError != "" {
		rows = append(rows, row{"first error", r.FirstError})
	}
	return rows
}

func fmtBytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

func runIdle(ctx context.Context, e *env, c *idleConfig) (report, error) {
	if c.subscribers < 1 || c.hold < 0 {
		return nil, errors.New("idle: --subscribers must be positive, --duration not negative")
	}
	if e.pid == 0 {
		return nil, errors.New("idle: the server's resident memory is read from /proc/<pid>/status: give --spawn, or --pid with --url")
	}
	r := &idleReport{runInfo: e.info, Subscribers: c.subscribers}
	before, _, err := settledRSS(ctx, e.pid, e.timeout)
	if err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	r.RSSBefore = before

	var (
		errs     atomic.Int64
		errOnce  sync.Once
		firstErr error
	)
	cpu := startCPU(e.pid)
	connectStart := time.Now()
	g, err := openGroup(ctx, e, c.subscribers, nil, func(g *group, _ int, sc *sseConn) {
		var f frame
		for {
			if err := sc.p.next(&f); err != nil {
				if !g.closed() {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
				return
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	r.ConnectSeconds = time.Since(connectStart).Seconds()
	if c.hold > 0 {
		hold := time.NewTimer(c.hold)
		select {
		case <-hold.C:
		case <-ctx.Done():
		}
		hold.Stop()
	}
	settleStart := time.Now()
	after, settled, err := settledRSS(ctx, e.pid, e.timeout)
	r.SettleSeconds = time.Since(settleStart).Seconds()
	if self, selfErr := readRSS(os.Getpid()); selfErr == nil {
		r.ClientRSS = self
	}
	g.close()
	cpu.stop(&r.runInfo)
	if err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	r.RSSAfter, r.Settled = after, settled
	r.PerSubscriber = float64(after-before) / float64(c.subscribers)
	r.Errors = errs.Load()
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if r.Errors > 0 {
		return r, fmt.Errorf("%w: %d subscribers were cut off; first: %s", ErrCheck, r.Errors, r.FirstError)
	}
	return r, nil
}

// settledRSS samples pid's resident memory until settleSamples consecutive
// readings agree, or timeout passes; it returns the last reading and
// whether it settled.
func settledRSS(ctx context.Context, pid int, timeout time.Duration) (int64, bool, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(settleEvery)
	defer tick.Stop()
	var samples []int64
	for {
		rss, err := readRSS(pid)
		if err != nil {
			return 0, false, err
		}
		samples = append(samples, rss)
		if len(samples) > settleSamples {
			samples = samples[1:]
		}
		if len(samples) == settleSamples && stable(samples) {
			return rss, true, nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return rss, false, nil
		case <-ctx.Done():
			return rss, false, ctx.Err()
		}
	}
}

func stable(samples []int64) bool {
	lo, hi := samples[0], samples[0]
	for _, s := range samples {
		lo, hi = min(lo, s), max(hi, s)
	}
	return hi-lo <= max(settleBytes, int64(float64(hi)*settleRatio))
}
