package retention_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

// base is the time test events are published at: far from both the real
// clock and synctest's (2000-01-01), so a cut point taken from the wrong
// clock shows.
var base = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for the store's ids and the worker's cut points.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.Set(t)
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// openLog opens a log in a fresh temp dir with ids from clk, and closes it
// when the test ends; a test that closes it itself is fine.
func openLog(tb testing.TB, clk *clock) *store.Log {
	tb.Helper()
	return openLogAt(tb, filepath.Join(tb.TempDir(), "log.db"), clk)
}

// openLogAt is openLog at path, for a test that reopens the file.
func openLogAt(tb testing.TB, path string, clk *clock) *store.Log {
	tb.Helper()
	return testkit.OpenAt(tb, path, store.Options{Now: clk.Now})
}

// event is a test event; every one has the same stored size.
func event(n int) store.Event {
	return store.Event{Type: "tick", Data: fmt.Appendf(nil, `{"n":%08d}`, n)}
}

// publish appends n events to stream one per second of clk, starting at
// clk's time, and returns their ids. The clock ends one second after the
// last event.
func publish(tb testing.TB, l *store.Log, clk *clock, stream string, n int) []store.ID {
	tb.Helper()
	ids := make([]store.ID, 0, n)
	for i := range n {
		got, err := l.Append(context.Background(), stream, []store.Event{event(i)})
		if err != nil {
			tb.Fatalf("append to %s: %v", stream, err)
		}
		ids = append(ids, got...)
		clk.Advance(time.Second)
	}
	return ids
}

// publishBatch appends n events to stream in one batch, all in one
// millisecond of the store's clock.
func publishBatch(tb testing.TB, l *store.Log, stream string, n int) []store.ID {
	tb.Helper()
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = event(i)
	}
	ids, err := l.Append(context.Background(), stream, evs)
	if err != nil {
		tb.Fatalf("append %d events to %s: %v", n, stream, err)
	}
	return ids
}

func mustStream(tb testing.TB, l *store.Log, name string) store.StreamInfo {
	tb.Helper()
	info, err := l.Stream(name)
	if err != nil {
		tb.Fatalf("stream %s: %v", name, err)
	}
	return info
}

func mustRunOnce(tb testing.TB, w *retention.Worker) retention.Stats {
	tb.Helper()
	st, err := w.RunOnce(context.Background())
	if err != nil {
		tb.Fatalf("RunOnce: %v", err)
	}
	return st
}

// checkKept checks that stream holds exactly the newest kept of ids and
// that its low-water mark is the newest id trimmed.
func checkKept(tb testing.TB, l *store.Log, stream string, ids []store.ID, kept int) {
	tb.Helper()
	info := mustStream(tb, l, stream)
	if info.Count != uint64(kept) {
		tb.Errorf("%s: count %d, want %d", stream, info.Count, kept)
	}
	var wantFirst, wantLow store.ID
	if kept > 0 {
		wantFirst = ids[len(ids)-kept]
	}
	if kept < len(ids) {
		wantLow = ids[len(ids)-kept-1]
	}
	if info.FirstID != wantFirst {
		tb.Errorf("%s: first id %s, want %s", stream, info.FirstID, wantFirst)
	}
	if info.LowWater != wantLow {
		tb.Errorf("%s: low-water mark %s, want %s", stream, info.LowWater, wantLow)
	}
	evs, err := l.ReadAfter(stream, store.ID{}, 0)
	if err != nil {
		tb.Fatalf("read %s: %v", stream, err)
	}
	if len(evs) != kept {
		tb.Fatalf("%s: read %d events, want %d", stream, len(evs), kept)
	}
	for i, e := range evs {
		if want := ids[len(ids)-kept+i]; e.ID != want {
			tb.Errorf("%s: event %d is %s, want %s", stream, i, e.ID, want)
		}
	}
}

// recorder is a slog handler that keeps the records it is given.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// messages returns the messages logged so far.
func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		out = append(out, rec.Message)
	}
	return out
}

// trimmed returns the events count each logged pass reported.
func (r *recorder) trimmed() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, rec := range r.records {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key != "stats" {
				return true
			}
			for _, g := range a.Value.Resolve().Group() {
				if g.Key == "events" {
					out = append(out, g.Value.Int64())
				}
			}
			return false
		})
	}
	return out
}
