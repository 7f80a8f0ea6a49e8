// Package ssewire owns the connections that carry Server-Sent Events: how
// a stream's response starts, where its frames are written, how a client's
// departure is noticed, when a stalled write is cut, and how every stream
// ends at shutdown.
//
// The contract:
//   - Start answers a request with an SSE stream (status 200, the stream
//     headers, then the first bytes given) and calls run with the stream's
//     Sink exactly once, unless it returns an error.
//   - Over HTTP/1.1 the connection is taken over from net/http (Hijack):
//     net/http's buffers, background reader and handler goroutine are let
//     go, run goes on in a goroutine of its own after Start returns, and
//     frames are written with writev. An idle stream then costs about
//     14 KB instead of about 29 KB (BENCHMARKS.md). The response is
//     "Connection: close" with no length: the stream ends with its
//     connection. One read notices the client leave; a client that sends
//     anything is treated as gone.
//   - Otherwise (HTTP/2, or a connection that cannot be taken over) run
//     runs before Start returns, writing through net/http.
//   - Either way, a write that makes no progress for the write timeout is
//     cut, and no deadline is ever set ahead on an HTTP/2 stream (see
//     package watchdog).
//   - Close ends the wire: Start refuses new streams with ErrClosed, and
//     every running stream's Sink reports Closing, and its OnGone function
//     is called, so that its loop can send a last retry hint and return.
//     Close is safe to register with http.Server.RegisterOnShutdown: then
//     Shutdown alone ends every stream. Wait waits for the taken-over
//     streams, which Shutdown does not track, and closes their connections
//     when its context ends first.
package ssewire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sselog/sselog/httpapi/internal/watchdog"
)

// ErrClosed is returned by Start once Close has been called.
var ErrClosed = errors.New("the server is shutting down")

// deadlineEvery is how many bytes a stream is sent under one write
// deadline before the deadline is moved on.
const deadlineEvery = 64 << 10

// Sink is where a stream's frames go.
type Sink interface {
	// Send writes the chunks and flushes them. A write that makes no
	// progress for the write timeout is cut; a long replay that keeps
	// moving is not.
	Send(chunks [][]byte) error
	// OnGone arranges for fn to be called once the client has gone or the
	// wire is closing; the returned func cancels that. fn may still run
	// once, concurrently, after stop returns: it must be safe to call at
	// any time (a non-blocking send on a buffered channel is).
	OnGone(fn func()) (stop func())
	// Gone reports whether the client has disconnected.
	Gone() bool
	// Closing reports whether the wire is closing: the stream should end,
	// with a last retry hint.
	Closing() bool
}

// RawConner is a connection wrapper (a listener's) that lets frames be
// written to the connection beneath it: net.Buffers uses writev only on
// the net package's own connections. The wrapper is still what is closed.
type RawConner interface {
	RawConn() net.Conn
}

// Wire is the registry of a handler's SSE streams.
type Wire struct {
	timeout time.Duration

	closing atomic.Bool
	mu      sync.Mutex
	sinks   map[notifier]struct{}
	killed  bool           // Wait ran out of time: a stream registered late is cut at once
	streams sync.WaitGroup // taken-over streams still running
}

// notifier is what Close reaches in each running stream.
type notifier interface {
	notifyClosing()
	kill() // close the connection under a stalled stream
}

// New returns a Wire whose streams cut a write that makes no progress for
// writeTimeout.
func New(writeTimeout time.Duration) *Wire {
	return &Wire{timeout: writeTimeout, sinks: make(map[notifier]struct{})}
}

// SetHeaders sets the headers of an SSE response.
func SetHeaders(hdr http.Header) {
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
}

// RetryOnly answers with a stream that holds only body (a retry hint) and
// ends: for a subscriber over a limit, or one arriving at shutdown. Any
// status but 200 would make EventSource give up for good. Over HTTP/1.1
// the connection is closed after it; over HTTP/2 that would retire the
// client's shared connection.
func RetryOnly(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	SetHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// Start answers r with an SSE stream that begins with first, and runs the
// stream with run (see the package doc). On ErrClosed nothing has been
// written, and the caller may answer; on any other error the connection
// is unusable.
func (wr *Wire) Start(w http.ResponseWriter, r *http.Request, first []byte, run func(Sink)) error {
	if hj, ok := w.(http.Hijacker); ok && r.ProtoMajor == 1 {
		// Counted before the take-over: from then on http.Server.Shutdown
		// no longer waits for this connection, and Wait must.
		wr.mu.Lock()
		if wr.closing.Load() {
			wr.mu.Unlock()
			return ErrClosed
		}
		wr.streams.Add(1)
		wr.mu.Unlock()
		sink, err := wr.hijack(w, hj, first)
		if err != nil {
			wr.streams.Done()
			return err
		}
		wr.add(sink)
		go func() {
			defer wr.streams.Done()
			defer func() {
				wr.remove(sink)
				sink.closer.Close()
			}()
			run(sink)
		}()
		return nil
	}
	if wr.closing.Load() {
		return ErrClosed
	}
	SetHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	sink := newResponseSink(w, r.Context(), wr)
	defer sink.dog.Close()
	wr.add(sink)
	defer wr.remove(sink)
	if err := sink.Send([][]byte{first}); err != nil {
		// The client went before the stream began: run is not called,
		// and the caller releases what it holds for the stream.
		return err
	}
	run(sink)
	return nil
}

// Open reports how many streams are running.
func (wr *Wire) Open() int {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return len(wr.sinks)
}

// add registers a running stream; one added after Close began is told at
// once.
func (wr *Wire) add(n notifier) {
	wr.mu.Lock()
	wr.sinks[n] = struct{}{}
	closing, killed := wr.closing.Load(), wr.killed
	wr.mu.Unlock()
	if closing {
		n.notifyClosing()
	}
	if killed {
		n.kill()
	}
}

func (wr *Wire) remove(n notifier) {
	wr.mu.Lock()
	delete(wr.sinks, n)
	wr.mu.Unlock()
}

// Close ends the wire: no new stream starts, and every running one is told
// to end. It does not wait.
func (wr *Wire) Close() {
	for _, n := range wr.running(func() { wr.closing.Store(true) }) {
		n.notifyClosing()
	}
}

// running returns the running streams, after mark has run under the lock
// that add takes: a stream added later sees what mark set.
func (wr *Wire) running(mark func()) []notifier {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	mark()
	return slices.Collect(maps.Keys(wr.sinks))
}

// Wait closes the wire (Close) if it is not already, and waits for the
// taken-over streams to end. When ctx ends first, it closes their
// connections, waits for them to return, and returns ctx's error.
func (wr *Wire) Wait(ctx context.Context) error {
	// After Close no stream is counted any more, so the wait cannot race
	// with a new one.
	wr.Close()
	done := make(chan struct{})
	go func() { wr.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	// Outside the lock: closing a connection may take time of its own.
	for _, n := range wr.running(func() { wr.killed = true }) {
		n.kill()
	}
	<-done
	return ctx.Err()
}

// signal is the OnGone function of a stream, called at most once by each
// of its two causes.
type signal struct {
	mu     sync.Mutex
	gone   bool
	fn     func()
	closed atomic.Bool // the wire told this stream to end
}

func (s *signal) fire() {
	s.mu.Lock()
	fn := s.fn
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
}

func (s *signal) OnGone(fn func()) func() {
	s.mu.Lock()
	now := s.gone || s.closed.Load()
	s.fn = fn
	s.mu.Unlock()
	if now {
		fn()
	}
	return func() {
		s.mu.Lock()
		s.fn = nil
		s.mu.Unlock()
	}
}

func (s *signal) Closing() bool { return s.closed.Load() }

func (s *signal) notifyClosing() {
	s.closed.Store(true)
	s.fire()
}

// responseSink streams through net/http. Its writes are cut by a
// watchdog, not a deadline set ahead (see package watchdog).
type responseSink struct {
	signal
	w   http.ResponseWriter
	rc  *http.ResponseController
	ctx context.Context
	dog *watchdog.Watchdog
}

func newResponseSink(w http.ResponseWriter, ctx context.Context, wr *Wire) *responseSink {
	rc := http.NewResponseController(w)
	return &responseSink{w: w, rc: rc, ctx: ctx, dog: watchdog.New(wr.timeout, func() { _ = rc.SetWriteDeadline(watchdog.Past) })}
}

func (s *responseSink) OnGone(fn func()) func() {
	stopCtx := context.AfterFunc(s.ctx, fn)
	stop := s.signal.OnGone(fn)
	return func() { stopCtx(); stop() }
}

func (s *responseSink) Gone() bool { return s.ctx.Err() != nil }

// kill is not needed: an HTTP/2 stream ends with its handler, which
// http.Server.Shutdown waits for and http.Server.Close cuts.
func (s *responseSink) kill() {}

func (s *responseSink) Send(chunks [][]byte) error {
	if err := s.ctx.Err(); err != nil {
		// Reset or gone: nothing more is written, not even a flush.
		return err
	}
	s.dog.Start()
	defer s.dog.Stop()
	pending := 0
	for _, c := range chunks {
		for len(c) > 0 {
			if pending == deadlineEvery {
				s.dog.Progress()
				pending = 0
			}
			n := min(len(c), deadlineEvery-pending)
			if _, err := s.w.Write(c[:n]); err != nil {
				return err
			}
			pending += n
			c = c[n:]
		}
	}
	return s.rc.Flush()
}

// connSink streams on a taken-over HTTP/1.1 connection.
type connSink struct {
	signal
	conn     net.Conn
	closer   io.Closer // conn, or the listener's wrapper around it
	timeout  time.Duration
	deadline time.Time // the write deadline set last
	bufs     net.Buffers
}

// hijack takes the connection over and writes the response head and
// first.
func (wr *Wire) hijack(w http.ResponseWriter, hj http.Hijacker, first []byte) (*connSink, error) {
	closer, _, err := hj.Hijack()
	if err != nil {
		return nil, err
	}
	// Only a listener's wrapper is looked through: a *tls.Conn also has a
	// NetConn, whose bytes are the encrypted ones.
	conn := closer
	if rc, ok := closer.(RawConner); ok {
		conn = rc.RawConn()
	}
	// A read deadline set for a request body must not end the stream.
	_ = conn.SetReadDeadline(time.Time{})
	hdr := w.Header().Clone()
	SetHeaders(hdr)
	hdr.Set("Connection", "close")
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	bw := bufio.NewWriterSize(conn, 512)
	_, _ = bw.WriteString("HTTP/1.1 200 OK\r\n")
	_ = hdr.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_, _ = bw.Write(first)
	_ = conn.SetWriteDeadline(time.Now().Add(wr.timeout))
	if err := bw.Flush(); err != nil {
		closer.Close()
		return nil, err
	}
	s := &connSink{conn: conn, closer: closer, timeout: wr.timeout}
	// One read, only to see the client go: an SSE client has nothing more
	// to send, and requests pipelined behind this one are never answered
	// on a stream that ends with its connection. A client that sends
	// anything is treated as gone rather than read from byte by byte.
	// (Whatever net/http had buffered past the request is dropped.)
	go func() {
		defer s.setGone()
		var b [1]byte
		_, _ = conn.Read(b[:])
	}()
	return s, nil
}

func (s *connSink) setGone() {
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
	s.fire()
}

func (s *connSink) Gone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

// kill closes the connection beneath a stalled stream, so that its write
// fails at once. Under TLS that is the TCP connection: closing the TLS one
// would first try to send an alert, and wait on the stalled client for it.
// The stream's own end then closes the connection it was given.
func (s *connSink) kill() {
	if tc, ok := s.conn.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	s.conn.Close()
}

func (s *connSink) Send(chunks [][]byte) error {
	// writev the frames as they are, shared with every other subscriber,
	// in runs of at most deadlineEvery bytes (a replay page is cut into
	// pieces), each with the deadline moved on when it is near.
	size := 0
	flush := func() error {
		// Moving the deadline is a timer operation: do it only once it is
		// nearer than the timeout. A write is then cut off after between
		// one and one and a half timeouts without progress.
		if now := time.Now(); s.deadline.Sub(now) < s.timeout {
			s.deadline = now.Add(s.timeout + s.timeout/2)
			if err := s.conn.SetWriteDeadline(s.deadline); err != nil {
				return err
			}
		}
		// WriteTo consumes the slice it is called on: keep s.bufs whole.
		b := s.bufs
		_, err := b.WriteTo(s.conn)
		s.bufs, size = s.bufs[:0], 0
		return err
	}
	defer func() { clear(s.bufs[:cap(s.bufs)]) }()
	s.bufs = s.bufs[:0]
	for _, c := range chunks {
		for len(c) > 0 {
			n := min(len(c), deadlineEvery-size)
			s.bufs = append(s.bufs, c[:n])
			size += n
			c = c[n:]
			if size == deadlineEvery {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if size > 0 {
		return flush()
	}
	return nil
}
