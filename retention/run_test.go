package retention_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

// TestRun drives Run's ticker with synctest's fake time: a pass at start, no
// pass before Interval has passed, one when it has, and a prompt return
// when the context ends. Cut points come from the injected clock, which
// is years away from synctest's: a cut taken from time.Now would trim
// nothing.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Minute
		clk := newClock(base)
		l := openLog(t, clk) // inside the bubble: the log's writer must be too
		ids := publish(t, l, clk, "s", 10)

		retClock := newClock(base.Add(10 * time.Second))
		rec := &recorder{}
		w := retention.New(l, retention.Options{
			Defaults: store.Limits{MaxAge: 4 * time.Second},
			Interval: interval,
			Now:      retClock.Now,
			Logger:   slog.New(rec),
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()

		synctest.Wait() // the first pass is over, Run waits for its ticker
		checkKept(t, l, "s", ids, 4)
		if got := rec.messages(); !slices.Equal(got, []string{"retention pass"}) {
			t.Fatalf("logged %q after the first pass, want one pass", got)
		}

		// Everything is now past its age, but the next pass is not due.
		retClock.Advance(time.Hour)
		time.Sleep(interval - time.Nanosecond)
		synctest.Wait()
		checkKept(t, l, "s", ids, 4)

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		checkKept(t, l, "s", ids, 0)
		if got := rec.trimmed(); !slices.Equal(got, []int64{6, 4}) {
			t.Fatalf("passes logged %v events trimmed, want [6 4]", got)
		}

		// A pass with nothing to trim logs nothing.
		time.Sleep(interval)
		synctest.Wait()
		if got := rec.messages(); len(got) != 2 {
			t.Errorf("logged %q after an empty pass, want nothing new", got)
		}

		cancel()
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		default:
			t.Fatal("Run did not return when its context ended")
		}
	})
}
