package httpapi

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

var heartbeat = []byte(":\n\n")

// deadlineEvery is how many bytes a subscriber is sent under one write
// deadline before the deadline is moved on.
const deadlineEvery = 64 << 10

func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["stream"]
	if err := store.ValidateStream(name); err != nil {
		h.writeError(w, r, err)
		return
	}
	source, resume := "Last-Event-ID", r.Header.Get("Last-Event-ID")
	if resume == "" {
		source, resume = "last_event_id", r.URL.Query().Get("last_event_id")
	}
	var after store.ID
	if resume != "" {
		id, err := store.ParseID(resume)
		if err != nil {
			h.writeError(w, r, errorf(http.StatusBadRequest, "%s: %v", source, err))
			return
		}
		after = id
	}
	release, ok := h.takeSlot(r)
	if !ok {
		// Over a limit. Any answer but 200 makes EventSource give up for
		// good; an empty stream with a jittered retry hint makes it come
		// back later, spread out.
		h.logger.Debug("subscriber over the limit", "stream", name, "remote", r.RemoteAddr)
		if r.ProtoMajor == 1 {
			// Over HTTP/2 this would retire the client's shared connection.
			w.Header().Set("Connection", "close")
		}
		setStreamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(h.retryLine(true))
		return
	}
	sub, err := h.hub.Subscribe(name, after, resume != "")
	if err != nil {
		release()
	}
	if errors.Is(err, stream.ErrClosed) {
		// Shutting down. Any answer but 200 makes EventSource give up for
		// good; an empty stream with a retry hint makes it come back.
		setStreamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(h.retryLine(true))
		return
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}

	// A stream lives no longer than the token that opened it: then it ends
	// with a retry hint, and the client comes back with a fresh token (a
	// renewed cookie, say) or is refused.
	lifetime, limited := h.tokenLifetime(r)

	// Over HTTP/1.1 the connection is taken over from net/http: the
	// handler's goroutine (with the stack the router grew), net/http's
	// buffers and its background reader are let go, and the stream runs on
	// a fresh goroutine writing frames with writev. An idle subscriber
	// then costs a few kilobytes instead of tens.
	if hj, ok := w.(http.Hijacker); ok && r.ProtoMajor == 1 {
		// Counted before the take-over: from then on Shutdown no longer
		// waits for this connection, and Drain must. Once Drain has begun,
		// the stream is not started.
		h.connsMu.Lock()
		if h.draining {
			h.connsMu.Unlock()
			sub.Close()
			release()
			setStreamHeaders(w.Header())
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(h.retryLine(true))
			return
		}
		h.streams.Add(1)
		h.connsMu.Unlock()
		sink, err := h.hijack(w, hj)
		if err != nil {
			// The connection is in an unknown state: give up on it.
			h.streams.Done()
			sub.Close()
			release()
			h.logger.Debug("taking over the connection failed", "stream", name, "err", err)
			return
		}
		h.connsMu.Lock()
		h.conns[sink] = struct{}{}
		h.connsMu.Unlock()
		go func() {
			defer h.streams.Done()
			defer release()
			defer sub.Close()
			defer func() {
				h.connsMu.Lock()
				delete(h.conns, sink)
				h.connsMu.Unlock()
				sink.close()
			}()
			h.follow(sub, sink, name, lifetime, limited)
		}()
		return
	}
	defer release()
	defer sub.Close()
	setStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	sink := newResponseSink(w, r.Context(), h.opts.WriteTimeout)
	defer sink.close()
	if err := sink.send([][]byte{h.retry}); err != nil {
		return
	}
	h.follow(sub, sink, name, lifetime, limited)
}

// takeSlot counts an SSE stream against the subscriber limits, and reports
// false when it is over one. release gives the slot back.
func (h *Handler) takeSlot(r *http.Request) (release func(), ok bool) {
	if h.opts.MaxSubscribers <= 0 && h.opts.MaxSubscribersPerIP <= 0 {
		return func() {}, true
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	h.slotsMu.Lock()
	defer h.slotsMu.Unlock()
	if h.opts.MaxSubscribers > 0 && h.slots >= h.opts.MaxSubscribers ||
		h.opts.MaxSubscribersPerIP > 0 && h.slotsIP[ip] >= h.opts.MaxSubscribersPerIP {
		return nil, false
	}
	h.slots++
	h.slotsIP[ip]++
	return sync.OnceFunc(func() {
		h.slotsMu.Lock()
		defer h.slotsMu.Unlock()
		h.slots--
		if h.slotsIP[ip]--; h.slotsIP[ip] == 0 {
			delete(h.slotsIP, ip)
		}
	}), true
}

func setStreamHeaders(hdr http.Header) {
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
}

// retryLine is the stream's first line; jittered, for a stream that ends
// because the server is going away, so that its clients do not all come
// back in the same instant.
func (h *Handler) retryLine(jitter bool) []byte {
	if !jitter {
		return h.retry
	}
	ms := h.opts.Retry.Milliseconds()
	ms += rand.Int64N(ms + 1)
	return []byte("retry: " + strconv.FormatInt(ms, 10) + "\n\n")
}

// follow runs a subscription into sink until the subscriber goes, the
// stream is deleted or the hub closes.
//
// A live stream wakes every subscriber for every commit, so the wait is
// kept cheap: one select over two channels, and no timer touched per
// event. The heartbeat timer fires once per interval and only then looks at
// when the stream last sent anything; it and the subscriber's departure
// both signal ctl.
func (h *Handler) follow(sub *stream.Subscription, sink sseSink, name string, lifetime time.Duration, limited bool) {
	ctl := make(chan struct{}, 1)
	signal := func() {
		select {
		case ctl <- struct{}{}:
		default:
		}
	}
	hb := time.AfterFunc(h.opts.Heartbeat, signal)
	defer hb.Stop()
	stopGone := sink.onGone(signal)
	defer stopGone()
	var expired chan struct{}
	if limited {
		expired = make(chan struct{})
		defer time.AfterFunc(lifetime, func() { close(expired) }).Stop()
	}
	lastSend := time.Now()
	for {
		frames, wake, err := sub.Next()
		if err != nil {
			switch {
			case errors.Is(err, stream.ErrClosed), errors.Is(err, store.ErrClosed):
				// Shutting down: a last, jittered hint spreads the
				// reconnections out.
				_ = sink.send([][]byte{h.retryLine(true)})
			case errors.Is(err, stream.ErrDeleted):
				// The reset that says so has been sent.
			default:
				h.logger.Error("subscription failed", "stream", name, "cursor", sub.Cursor(), "err", err)
			}
			return
		}
		if len(frames) > 0 {
			if err := sink.send(frames); err != nil {
				h.logger.Debug("subscriber gone", "stream", name, "cursor", sub.Cursor(), "err", err)
				return
			}
			lastSend = time.Now()
			if expired != nil {
				select {
				case <-expired:
					_ = sink.send([][]byte{h.retryLine(true)})
					return
				default:
				}
			}
			continue
		}
		select {
		case <-wake:
		case <-expired:
			_ = sink.send([][]byte{h.retryLine(true)})
			return
		case <-ctl:
			if sink.isGone() {
				return
			}
			if idle := time.Since(lastSend); idle < h.opts.Heartbeat {
				hb.Reset(h.opts.Heartbeat - idle)
				continue
			}
			if err := sink.send([][]byte{heartbeat}); err != nil {
				h.logger.Debug("subscriber gone", "stream", name, "cursor", sub.Cursor(), "err", err)
				return
			}
			lastSend = time.Now()
			hb.Reset(h.opts.Heartbeat)
		}
	}
}

// sseSink is where a stream's frames go.
type sseSink interface {
	// send writes the chunks and flushes them, moving the write deadline on
	// as it goes: a subscriber is cut off when a write makes no progress
	// for the write timeout, not when a long replay takes longer in total.
	send(chunks [][]byte) error
	// onGone arranges for fn to be called once the subscriber has
	// disconnected; the returned func cancels that.
	onGone(fn func()) (stop func())
	// isGone reports whether the subscriber has disconnected.
	isGone() bool
}

// responseSink streams through net/http: HTTP/2, or when the connection
// cannot be taken over. Its writes are cut by a watchdog, not a deadline
// set ahead: over HTTP/2 that would keep a stream the client has reset in
// memory for the write timeout (see watchdog.go).
type responseSink struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	ctx context.Context
	dog *watchdog
}

func newResponseSink(w http.ResponseWriter, ctx context.Context, timeout time.Duration) *responseSink {
	rc := http.NewResponseController(w)
	return &responseSink{w: w, rc: rc, ctx: ctx, dog: newWatchdog(timeout, func() { _ = rc.SetWriteDeadline(pastDeadline) })}
}

// close stops the watchdog; call it before the handler returns.
func (s *responseSink) close() { s.dog.close() }

func (s *responseSink) onGone(fn func()) func() {
	stop := context.AfterFunc(s.ctx, fn)
	return func() { stop() }
}

func (s *responseSink) isGone() bool { return s.ctx.Err() != nil }

func (s *responseSink) send(chunks [][]byte) error {
	if err := s.ctx.Err(); err != nil {
		// Reset or gone: nothing more is written, not even a flush.
		return err
	}
	s.dog.start()
	defer s.dog.stop()
	pending := 0
	for _, c := range chunks {
		for len(c) > 0 {
			if pending == deadlineEvery {
				s.dog.progress()
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

// connSink streams on a hijacked HTTP/1.1 connection.
type connSink struct {
	conn     net.Conn
	timeout  time.Duration
	closer   io.Closer // conn, or the Listener's wrapper around it
	deadline time.Time // the write deadline set last
	bufs     net.Buffers

	mu     sync.Mutex
	gone   bool   // set by the reader when the client goes
	notify func() // called once when gone is set
}

// hijack takes the connection over and writes the response head and the
// retry hint. The response is "Connection: close" with no length: the
// stream ends when the connection does.
func (h *Handler) hijack(w http.ResponseWriter, hj http.Hijacker) (*connSink, error) {
	closer, _, err := hj.Hijack()
	if err != nil {
		return nil, err
	}
	// Frames are written to the connection itself, not to a Listener's
	// wrapper around it: net.Buffers uses writev only on the net package's
	// own connections. It is closed through the wrapper, which gives the
	// connection's slot back.
	// (Only that wrapper: a *tls.Conn also has NetConn, whose bytes are
	// the encrypted ones.)
	conn := closer
	if wc, ok := closer.(*watchedConn); ok {
		conn = wc.NetConn()
	}
	// A read deadline set for a request body must not end the stream.
	_ = conn.SetReadDeadline(time.Time{})
	hdr := w.Header().Clone()
	setStreamHeaders(hdr)
	hdr.Set("Connection", "close")
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	bw := bufio.NewWriterSize(conn, 512)
	_, _ = bw.WriteString("HTTP/1.1 200 OK\r\n")
	_ = hdr.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_, _ = bw.Write(h.retry)
	_ = conn.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout))
	if err := bw.Flush(); err != nil {
		closer.Close()
		return nil, err
	}
	s := &connSink{conn: conn, closer: closer, timeout: h.opts.WriteTimeout}
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
	fn := s.notify
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
}

func (s *connSink) onGone(fn func()) func() {
	s.mu.Lock()
	gone := s.gone
	s.notify = fn
	s.mu.Unlock()
	if gone {
		fn()
	}
	return func() {
		s.mu.Lock()
		s.notify = nil
		s.mu.Unlock()
	}
}

func (s *connSink) isGone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

func (s *connSink) close() { s.closer.Close() }

func (s *connSink) send(chunks [][]byte) error {
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
