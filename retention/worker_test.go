package retention_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

func ptr[T any](v T) *T { return &v }

// TestLimits publishes ten events of equal size one second apart and makes
// one pass ten seconds after the first, so that an age limit of k seconds,
// an events limit of k and a bytes limit of k events' size each keep the
// newest k events.
func TestLimits(t *testing.T) {
	const n = 10
	tests := []struct {
		name     string
		defaults store.Limits
		policy   *store.Policy // nil: no override
		bytes    float64       // the default MaxBytes, in events' stored sizes
		kept     int
	}{
		{name: "no limits", kept: 10},
		{name: "age", defaults: store.Limits{MaxAge: 4 * time.Second}, kept: 4},
		{name: "age between events", defaults: store.Limits{MaxAge: 4500 * time.Millisecond}, kept: 4},
		{name: "age keeps the event at now-MaxAge", defaults: store.Limits{MaxAge: 5 * time.Second}, kept: 5},
		{name: "age a millisecond short of an event", defaults: store.Limits{MaxAge: 5*time.Second - time.Millisecond}, kept: 4},
		{name: "age trims all", defaults: store.Limits{MaxAge: time.Millisecond}, kept: 0},
		{name: "age keeps all", defaults: store.Limits{MaxAge: 10 * time.Second}, kept: 10},
		{name: "events", defaults: store.Limits{MaxEvents: 3}, kept: 3},
		{name: "events above count", defaults: store.Limits{MaxEvents: 11}, kept: 10},
		{name: "bytes", bytes: 5, kept: 5},
		{name: "bytes between events", bytes: 5.5, kept: 5},
		{name: "bytes below one event", bytes: 0.5, kept: 0},
		{name: "strictest is age", defaults: store.Limits{MaxAge: 2 * time.Second, MaxEvents: 5}, bytes: 7, kept: 2},
		{name: "strictest is events", defaults: store.Limits{MaxAge: 8 * time.Second, MaxEvents: 3}, bytes: 6, kept: 3},
		{name: "strictest is bytes", defaults: store.Limits{MaxAge: 8 * time.Second, MaxEvents: 7}, bytes: 4, kept: 4},
		{
			name:     "override beats default",
			defaults: store.Limits{MaxEvents: 3},
			policy:   &store.Policy{MaxEvents: ptr[uint64](6)},
			kept:     6,
		},
		{
			name:     "override tighter than default",
			defaults: store.Limits{MaxAge: 8 * time.Second},
			policy:   &store.Policy{MaxAge: ptr(time.Second)},
			kept:     1,
		},
		{
			name:     "override zero events is no limit",
			defaults: store.Limits{MaxEvents: 3},
			policy:   &store.Policy{MaxEvents: ptr[uint64](0)},
			kept:     10,
		},
		{
			name:     "override zero age is no limit",
			defaults: store.Limits{MaxAge: 2 * time.Second},
			policy:   &store.Policy{MaxAge: ptr(time.Duration(0))},
			kept:     10,
		},
		{
			name:   "override zero bytes is no limit",
			bytes:  2,
			policy: &store.Policy{MaxBytes: ptr[uint64](0)},
			kept:   10,
		},
		{
			name:     "override inherits what it leaves unset",
			defaults: store.Limits{MaxAge: 8 * time.Second, MaxEvents: 3},
			policy:   &store.Policy{MaxAge: ptr(time.Duration(0))},
			kept:     3,
		},
		{
			name:     "empty override is the defaults",
			defaults: store.Limits{MaxEvents: 3},
			policy:   &store.Policy{},
			kept:     3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(base)
			l := openLog(t, clk)
			ids := publish(t, l, clk, "s", n)
			before := mustStream(t, l, "s")
			if before.Bytes%n != 0 {
				t.Fatalf("events differ in size: %d bytes for %d", before.Bytes, n)
			}
			size := before.Bytes / n
			if tt.policy != nil {
				if err := l.SetPolicy("s", *tt.policy); err != nil {
					t.Fatal(err)
				}
			}
			defaults := tt.defaults
			defaults.MaxBytes = uint64(tt.bytes * float64(size))
			w := retention.New(l, retention.Options{Defaults: defaults, Now: newClock(base.Add(n * time.Second)).Now})

			st := mustRunOnce(t, w)

			checkKept(t, l, "s", ids, tt.kept)
			if got := mustStream(t, l, "s"); got.Bytes != uint64(tt.kept)*size {
				t.Errorf("bytes %d, want %d", got.Bytes, uint64(tt.kept)*size)
			}
			want := retention.Stats{Streams: 1, Trimmed: n - tt.kept, Bytes: uint64(n-tt.kept) * size}
			if tt.kept < n {
				want.StreamsTrimmed, want.Transactions = 1, 1
			}
			st.Took = 0
			if st != want {
				t.Errorf("stats %+v, want %+v", st, want)
			}
		})
	}
}

// TestAgeSameMillisecond checks the age cut at millisecond resolution, the
// resolution of ids: events in the millisecond of the cut point stay.
func TestAgeSameMillisecond(t *testing.T) {
	clk := newClock(base)
	l := openLog(t, clk)
	var ids []store.ID
	for range 3 {
		ids = append(ids, publishBatch(t, l, "s", 5)...)
		clk.Advance(time.Millisecond)
	}
	// now-MaxAge is inside the second millisecond: its events are not older.
	now := base.Add(time.Hour + time.Millisecond + 400*time.Microsecond)
	w := retention.New(l, retention.Options{Defaults: store.Limits{MaxAge: time.Hour}, Now: newClock(now).Now})
	if st := mustRunOnce(t, w); st.Trimmed != 5 {
		t.Errorf("trimmed %d, want 5", st.Trimmed)
	}
	checkKept(t, l, "s", ids, 10)
}

// TestOverridesPerStream checks that each stream gets its own override in
// one pass, and that overrides are read from the database: they survive a
// restart.
func TestOverridesPerStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	clk := newClock(base)
	l := openLogAt(t, path, clk)
	ids := map[string][]store.ID{}
	for _, s := range []string{"a", "b", "c"} {
		ids[s] = publish(t, l, clk, s, 10)
	}
	if err := l.SetPolicy("a", store.Policy{MaxEvents: ptr[uint64](2)}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicy("b", store.Policy{MaxEvents: ptr[uint64](0)}); err != nil {
		t.Fatal(err)
	}
	opts := retention.Options{Defaults: store.Limits{MaxEvents: 5}}
	st := mustRunOnce(t, retention.New(l, opts))
	if st.Streams != 3 || st.StreamsTrimmed != 2 || st.Trimmed != 8+5 {
		t.Errorf("stats %+v, want 3 streams, 2 trimmed, 13 events", st)
	}
	checkKept(t, l, "a", ids["a"], 2)
	checkKept(t, l, "b", ids["b"], 10)
	checkKept(t, l, "c", ids["c"], 5)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLogAt(t, path, clk)
	for _, s := range []string{"a", "b", "c"} {
		ids[s] = append(ids[s], publish(t, l, clk, s, 10)...)
	}
	mustRunOnce(t, retention.New(l, opts))
	checkKept(t, l, "a", ids["a"], 2)
	checkKept(t, l, "b", ids["b"], 20)
	checkKept(t, l, "c", ids["c"], 5)
}

// TestSkips checks the streams a pass has nothing to do for: one trimmed
// empty, a deleted one, a policy for a stream never published to, and
// streams within their limits. None is an error, and none costs a write
// transaction.
func TestSkips(t *testing.T) {
	clk := newClock(base)
	l := openLog(t, clk)
	emptied := publish(t, l, clk, "emptied", 3)
	publish(t, l, clk, "deleted", 3)
	kept := publish(t, l, clk, "kept", 3)
	if err := l.SetPolicy("emptied", store.Policy{MaxEvents: ptr[uint64](1), MaxAge: ptr(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicy("future", store.Policy{MaxEvents: ptr[uint64](1)}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicy("deleted", store.Policy{MaxEvents: ptr[uint64](1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteStream(context.Background(), "deleted"); err != nil {
		t.Fatal(err)
	}
	w := retention.New(l, retention.Options{Now: clk.Now})
	st := mustRunOnce(t, w)
	if st.Streams != 2 || st.Trimmed != 3 || st.Transactions != 1 {
		t.Errorf("first pass: %+v, want 2 streams, 3 events trimmed in 1 transaction", st)
	}
	checkKept(t, l, "emptied", emptied, 0)
	checkKept(t, l, "kept", kept, 3)

	st = mustRunOnce(t, w)
	if st.Streams != 2 || st.Trimmed != 0 || st.Transactions != 0 {
		t.Errorf("second pass: %+v, want 2 streams looked at, no transaction", st)
	}
	if _, err := l.Stream("deleted"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Errorf("deleted stream: %v, want ErrStreamNotFound", err)
	}
}

// TestChunks checks that a large trim is split into transactions of at most
// Chunk events, and that the result is exact.
func TestChunks(t *testing.T) {
	clk := newClock(base)
	l := openLog(t, clk)
	ids := publishBatch(t, l, "s", 1100)
	w := retention.New(l, retention.Options{Defaults: store.Limits{MaxEvents: 50}, Chunk: 100})
	st := mustRunOnce(t, w)
	if st.Trimmed != 1050 {
		t.Errorf("trimmed %d, want 1050", st.Trimmed)
	}
	if st.Transactions < 11 {
		t.Errorf("%d transactions, want at least 11 of at most 100 events", st.Transactions)
	}
	t.Logf("trimmed %d events in %d transactions", st.Trimmed, st.Transactions)
	checkKept(t, l, "s", ids, 50)
}

// countdown is a context that reports itself cancelled once Err has been
// asked left times: it ends a pass between two chunks without a race.
type countdown struct {
	context.Context
	left int
}

func (c *countdown) Err() error {
	if c.left == 0 {
		return context.Canceled
	}
	c.left--
	return nil
}

// TestRunOnceStopsBetweenChunks ends the context in the middle of a pass:
// the pass stops after a whole chunk, reports what it did, and the next
// pass finishes the job.
func TestRunOnceStopsBetweenChunks(t *testing.T) {
	clk := newClock(base)
	l := openLog(t, clk)
	ids := publishBatch(t, l, "s", 1000)
	w := retention.New(l, retention.Options{Defaults: store.Limits{MaxEvents: 1}, Chunk: 100})

	st, err := w.RunOnce(&countdown{Context: context.Background(), left: 4})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RunOnce: %v, want context.Canceled", err)
	}
	if st.Trimmed == 0 || st.Trimmed >= 999 || st.Trimmed != 100*st.Transactions {
		t.Fatalf("stopped pass: %+v, want some whole chunks of 100", st)
	}
	checkKept(t, l, "s", ids, len(ids)-st.Trimmed)

	if _, err := w.RunOnce(canceled()); !errors.Is(err, context.Canceled) {
		t.Errorf("RunOnce with an ended context: %v, want context.Canceled", err)
	}
	checkKept(t, l, "s", ids, len(ids)-st.Trimmed)

	mustRunOnce(t, w)
	checkKept(t, l, "s", ids, 1)
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestClosedLog checks that a pass over a closed log fails with ErrClosed,
// and that Run returns it instead of retrying forever.
func TestClosedLog(t *testing.T) {
	clk := newClock(base)
	l := openLog(t, clk)
	publish(t, l, clk, "s", 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	w := retention.New(l, retention.Options{Defaults: store.Limits{MaxEvents: 1}})
	if _, err := w.RunOnce(context.Background()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("RunOnce: %v, want ErrClosed", err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Run: %v, want ErrClosed", err)
	}
}

func TestDefaults(t *testing.T) {
	d := store.Limits{MaxAge: retention.DefaultMaxAge, MaxBytes: 1 << 30}
	w := retention.New(nil, retention.Options{Defaults: d})
	if w.Defaults() != d {
		t.Errorf("Defaults() = %+v, want %+v", w.Defaults(), d)
	}
}
