// Package watchdog ends a request's read or write that has run out its
// time without ever setting a deadline ahead of time.
//
// Over HTTP/2, setting a read or write deadline ahead starts a timer in
// the connection's serve loop that holds the stream, and the buffers of its
// response, until it fires: even after the client has reset the stream, and
// even after the handler has returned. A client that opens and cancels
// streams in a loop then pins memory by the gigabyte (rapid reset). A
// Watchdog instead sets a deadline in the past, which ends the operation
// without a timer, and only once the time is up; its own timer is stopped
// when the handler is done with it (Close).
package watchdog

import (
	"sync"
	"time"
)

// Past is a deadline already passed: set on a read or a write, it ends
// the operation at once.
var Past = time.Unix(1, 0)

// Watchdog ends an operation that has run for its timeout by calling
// expire, which sets a deadline in the past. Its methods are safe for
// concurrent use.
type Watchdog struct {
	timeout time.Duration
	expire  func()

	mu      sync.Mutex
	timer   *time.Timer
	armed   bool      // the timer is pending
	active  bool      // an operation is under watch
	since   time.Time // when the operation began or last made progress
	done    bool      // closed: expire is never called again
	expired bool
}

// New returns a Watchdog that calls expire once an operation under watch
// has run for timeout.
func New(timeout time.Duration, expire func()) *Watchdog {
	return &Watchdog{timeout: timeout, expire: expire}
}

// Start puts an operation under watch: unless progress is reported, it is
// ended once it has run for the timeout. The timer is armed only when it
// is not already pending: a stream that sends often touches it about once
// a timeout, not once a send; when it fires early, it waits again.
func (d *Watchdog) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.active, d.since = true, time.Now()
	switch {
	case d.timer == nil:
		d.timer = time.AfterFunc(d.timeout, d.fire)
	case !d.armed:
		d.timer.Reset(d.timeout)
	}
	d.armed = true
}

// Progress reports that the operation moved on: the timeout counts again
// from now. The timer is not touched; when it fires early, it waits again.
func (d *Watchdog) Progress() {
	d.mu.Lock()
	d.since = time.Now()
	d.mu.Unlock()
}

// Stop ends the watch over the current operation. A pending timer is left
// to fire, find nothing under watch, and lapse.
func (d *Watchdog) Stop() {
	d.mu.Lock()
	d.active = false
	d.mu.Unlock()
}

// Close stops the watchdog for good and reports whether it ended an
// operation. Once it returns, expire is not running and is never called
// again, so that nothing touches the response after its handler returned.
func (d *Watchdog) Close() (expired bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	if d.timer != nil {
		d.timer.Stop()
	}
	return d.expired
}

func (d *Watchdog) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done || !d.active {
		d.armed = false
		return
	}
	if wait := d.timeout - time.Since(d.since); wait > 0 {
		d.timer.Reset(wait)
		return
	}
	d.armed = false
	d.expired = true
	d.expire()
}
