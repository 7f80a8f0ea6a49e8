package watchdog_test

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sselog/sselog/httpapi/internal/watchdog"
)

// TestWatchdog runs in a bubble whose clock moves only when every
// goroutine waits, so the timeouts are exact and no test time is spent.
func TestWatchdog(t *testing.T) {
	const timeout = 30 * time.Second
	t.Run("ends an operation at its timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var fired atomic.Int32
			d := watchdog.New(timeout, func() { fired.Add(1) })
			d.Start()
			time.Sleep(timeout - time.Second)
			synctest.Wait()
			if fired.Load() != 0 {
				t.Fatal("expired before its timeout")
			}
			time.Sleep(2 * time.Second)
			synctest.Wait()
			if fired.Load() != 1 {
				t.Fatalf("expire called %d times at the timeout, want 1", fired.Load())
			}
			if !d.Close() {
				t.Fatal("Close does not report the expiry")
			}
		})
	})
	t.Run("progress moves the timeout on", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var fired atomic.Int32
			d := watchdog.New(timeout, func() { fired.Add(1) })
			d.Start()
			for range 5 {
				time.Sleep(timeout / 2)
				d.Progress()
			}
			synctest.Wait()
			if fired.Load() != 0 {
				t.Fatal("an operation that keeps moving was ended")
			}
			time.Sleep(timeout + time.Second)
			synctest.Wait()
			if fired.Load() != 1 {
				t.Fatalf("expire called %d times after progress stopped, want 1", fired.Load())
			}
			d.Close()
		})
	})
	t.Run("stop and close end the watch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var fired atomic.Int32
			d := watchdog.New(timeout, func() { fired.Add(1) })
			d.Start()
			d.Stop()
			time.Sleep(2 * timeout)
			d.Start()
			if d.Close() {
				t.Fatal("Close reports an expiry that did not happen")
			}
			time.Sleep(2 * timeout)
			synctest.Wait()
			if fired.Load() != 0 {
				t.Fatalf("expire called %d times after Stop or Close", fired.Load())
			}
		})
	})
}
