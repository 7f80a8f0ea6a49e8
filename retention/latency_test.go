package retention_test

import (
	"context"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

var chunkFlag = flag.Int("chunk", 0, "events per trim transaction in TestPublishLatencyWhileTrimming (0: DefaultChunk)")

// maxP99 is the publish latency the worker must keep while it trims. Under
// the race detector, which slows every write and runs beside the other
// packages' tests, the figure says little: the test then only guards
// against the regression it exists for (an unchunked trim holds publishes
// for over a second) with maxP99Race.
const (
	maxP99     = 50 * time.Millisecond
	maxP99Race = 250 * time.Millisecond
)

// TestPublishLatencyWhileTrimming fills a stream with a million events dated
// two days ago, then trims all of them in one pass while a publisher
// appends single events to another stream, one after the other, and
// measures each append. The 99th percentile must stay under maxP99: the
// chunks keep the worker from holding the write lock for long. Under -race
// or -short it uses 100,000 events.
func TestPublishLatencyWhileTrimming(t *testing.T) {
	n := 1_000_000
	if raceEnabled || testing.Short() {
		n = 100_000
	}
	const batch = 1000
	var ago atomic.Int64 // how far in the past the store's clock runs
	ago.Store(int64(48 * time.Hour))
	l, err := store.Open(filepath.Join(t.TempDir(), "log.db"), store.Options{
		Now: func() time.Time { return time.Now().Add(-time.Duration(ago.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx := t.Context()

	start := time.Now()
	if err := fill(ctx, l, "old", n, batch); err != nil {
		t.Fatal(err)
	}
	ago.Store(0)
	t.Logf("filled %d events in batches of %d in %v", n, batch, time.Since(start).Round(time.Millisecond))

	idle := make([]time.Duration, 0, 200)
	for range cap(idle) {
		t0 := time.Now()
		if _, err := l.Append(ctx, "live", []store.Event{event(0)}); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, time.Since(t0))
	}

	w := retention.New(l, retention.Options{
		Defaults: store.Limits{MaxAge: time.Hour},
		Chunk:    *chunkFlag,
	})
	var (
		stop    = make(chan struct{})
		started = make(chan struct{})
		done    = make(chan struct{})
		busy    []time.Duration
		pubErr  error
	)
	go func() {
		defer close(done)
		evs := []store.Event{event(1)}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if _, err := l.Append(ctx, "live", evs); err != nil {
				pubErr = err
				return
			}
			busy = append(busy, time.Since(t0))
			if i == 0 {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-done:
	}
	st, err := w.RunOnce(ctx)
	close(stop)
	<-done
	if pubErr != nil {
		t.Fatalf("publish: %v", pubErr)
	}
	if err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	if st.Trimmed != n {
		t.Fatalf("trimmed %d events, want %d", st.Trimmed, n)
	}
	if info := mustStream(t, l, "old"); info.Count != 0 || info.LowWater.IsZero() {
		t.Fatalf("after the pass: %+v, want no events and a low-water mark", info)
	}

	chunk := *chunkFlag
	if chunk <= 0 {
		chunk = retention.DefaultChunk
	}
	t.Logf("trimmed %d events in %d transactions of at most %d in %v (%.0f events/s)",
		st.Trimmed, st.Transactions, chunk, st.Took.Round(time.Millisecond), float64(st.Trimmed)/st.Took.Seconds())
	t.Logf("publish latency idle:           %s", summary(idle))
	t.Logf("publish latency while trimming: %s", summary(busy))
	t.Logf("reproduce: go test -run 'TestPublishLatencyWhileTrimming$' -count=1 -v ./retention/ [-short] [-race] [-args -chunk=N]")
	limit := maxP99
	if raceEnabled {
		limit = maxP99Race
	}
	if p99 := percentile(busy, 0.99); p99 >= limit {
		t.Errorf("publish p99 %v while trimming, want under %v", p99, limit)
	}
}

// fill appends n events to stream in batches, from a few goroutines so
// that the log's group commit shares the fsyncs.
func fill(ctx context.Context, l *store.Log, stream string, n, batch int) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, 4)
	)
	for range cap(errs) {
		wg.Go(func() {
			evs := make([]store.Event, batch)
			for {
				first := int(next.Add(int64(batch))) - batch
				if first >= n {
					return
				}
				evs = evs[:min(batch, n-first)]
				for i := range evs {
					evs[i] = store.Event{Type: "page_view", Data: payload(first + i)}
				}
				if _, err := l.Append(ctx, stream, evs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// payload is about 100 bytes of compact JSON, the size the HTTP layer
// typically stores.
func payload(n int) []byte {
	return fmt.Appendf(nil, `{"user":"u-%06d","action":"page_view","path":"/articles/%06d","ref":"newsletter","ok":true,"seq":%d}`, n%1000000, n%1000000, n)
}

func summary(d []time.Duration) string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(d),
		percentile(d, 0.50).Round(time.Microsecond),
		percentile(d, 0.99).Round(time.Microsecond),
		percentile(d, 1).Round(time.Microsecond))
}

// percentile returns the smallest sample at or above the fraction p of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(p*float64(len(s))))-1)]
}
