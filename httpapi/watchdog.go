package httpapi

import (
	"sync"
	"time"
)

// pastDeadline is a deadline already passed: set on a read or a write, it
// ends the operation at once.
var pastDeadline = time.Unix(1, 0)

// watchdog ends a request's read or write that has run for its timeout, by
// setting a deadline in the past once the timeout has passed, and never a
// deadline ahead of time.
//
// Over HTTP/2, setting a read or write deadline ahead starts a timer in the
// connection's serve loop that holds the stream, and the buffers of its
// response, until it fires: even after the client has reset the stream, and
// even after the handler has returned. A client that opens and cancels
// streams in a loop then pins memory by the gigabyte (rapid reset). A
// deadline in the past ends the operation without a timer, and the
// watchdog's own timer is stopped when the handler is done with it.
type watchdog struct {
	timeout time.Duration
	expire  func() // sets the past deadline

	mu      sync.Mutex
	timer   *time.Timer
	active  bool      // an operation is under watch
	since   time.Time // when the operation began or last made progress
	done    bool      // closed: expire is never called again
	expired bool
}

func newWatchdog(timeout time.Duration, expire func()) *watchdog {
	return &watchdog{timeout: timeout, expire: expire}
}

// start puts an operation under watch: unless progress is reported, it is
// ended once it has run for the timeout.
func (d *watchdog) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.active, d.since = true, time.Now()
	if d.timer == nil {
		d.timer = time.AfterFunc(d.timeout, d.fire)
	} else {
		d.timer.Reset(d.timeout)
	}
}

// progress reports that the operation moved on: the timeout counts again
// from now. The timer is not touched; when it fires early, it waits again.
func (d *watchdog) progress() {
	d.mu.Lock()
	d.since = time.Now()
	d.mu.Unlock()
}

// stop ends the watch over the current operation.
func (d *watchdog) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.active = false
	d.timer.Stop()
}

// close stops the watchdog for good and reports whether it ended an
// operation. Once it returns, expire is not running and is never called
// again, so that nothing touches the response after its handler returned.
func (d *watchdog) close() (expired bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	if d.timer != nil {
		d.timer.Stop()
	}
	return d.expired
}

func (d *watchdog) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done || !d.active {
		return
	}
	if wait := d.timeout - time.Since(d.since); wait > 0 {
		d.timer.Reset(wait)
		return
	}
	d.expired = true
	d.expire()
}
