package httpapi

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/httpapi/internal/ssewire"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

var heartbeat = []byte(":\n\n")

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
		// Over a limit: told to come back later, spread out.
		h.logger.Debug("subscriber over the limit", "stream", name, "remote", r.RemoteAddr)
		ssewire.RetryOnly(w, r, h.retryLine(true))
		return
	}
	// A client that names an id resumes after it (the log is read first);
	// one that names none wants only what is committed from now on.
	var sub *stream.Subscription
	var err error
	if resume != "" {
		sub, err = h.hub.SubscribeAfter(name, after)
	} else {
		sub, err = h.hub.SubscribeLive(name)
	}
	if err != nil {
		release()
		if errors.Is(err, stream.ErrClosed) {
			// Shutting down: told to come back.
			ssewire.RetryOnly(w, r, h.retryLine(true))
			return
		}
		h.writeError(w, r, err)
		return
	}

	// A stream lives no longer than the token that opened it: then it ends
	// with a retry hint, and the client comes back with a fresh token (a
	// renewed cookie, say) or is refused.
	lifetime, limited := h.tokenLifetime(r)
	err = h.wire.Start(w, r, h.retry, func(sink ssewire.Sink) {
		defer release()
		defer sub.Close()
		h.follow(sub, sink, name, lifetime, limited)
	})
	if err != nil {
		sub.Close()
		release()
		if errors.Is(err, ssewire.ErrClosed) {
			ssewire.RetryOnly(w, r, h.retryLine(true))
			return
		}
		// The connection is in an unknown state: give up on it.
		h.logger.Debug("starting the stream failed", "stream", name, "err", err)
	}
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
// stream is deleted, or the server shuts down (the wire closes, or the hub
// does).
//
// A live stream wakes every subscriber for every commit, so the wait is
// kept cheap: one select over two channels, and no timer touched per
// event. The heartbeat timer fires once per interval and only then looks at
// when the stream last sent anything; it, the subscriber's departure and
// the wire's closing all signal ctl.
func (h *Handler) follow(sub *stream.Subscription, sink ssewire.Sink, name string, lifetime time.Duration, limited bool) {
	ctl := make(chan struct{}, 1)
	signal := func() {
		select {
		case ctl <- struct{}{}:
		default:
		}
	}
	hb := time.AfterFunc(h.opts.Heartbeat, signal)
	defer hb.Stop()
	stopGone := sink.OnGone(signal)
	defer stopGone()
	var expired chan struct{}
	if limited {
		expired = make(chan struct{})
		defer time.AfterFunc(lifetime, func() { close(expired) }).Stop()
	}
	lastSend := time.Now()
	for {
		if sink.Closing() {
			// Shutting down: a last, jittered hint spreads the
			// reconnections out.
			_ = sink.Send([][]byte{h.retryLine(true)})
			return
		}
		frames, wake, err := sub.Next()
		if err != nil {
			switch {
			case errors.Is(err, stream.ErrClosed), errors.Is(err, store.ErrClosed):
				// Shutting down: a last, jittered hint spreads the
				// reconnections out.
				_ = sink.Send([][]byte{h.retryLine(true)})
			case errors.Is(err, stream.ErrDeleted):
				// The reset that says so has been sent.
			default:
				h.logger.Error("subscription failed", "stream", name, "cursor", sub.Cursor(), "err", err)
			}
			return
		}
		if len(frames) > 0 {
			if err := sink.Send(frames); err != nil {
				h.logger.Debug("subscriber gone", "stream", name, "cursor", sub.Cursor(), "err", err)
				return
			}
			lastSend = time.Now()
			if expired != nil {
				select {
				case <-expired:
					_ = sink.Send([][]byte{h.retryLine(true)})
					return
				default:
				}
			}
			continue
		}
		select {
		case <-wake:
		case <-expired:
			_ = sink.Send([][]byte{h.retryLine(true)})
			return
		case <-ctl:
			if sink.Gone() {
				return
			}
			if sink.Closing() {
				continue // said at the top of the loop
			}
			if idle := time.Since(lastSend); idle < h.opts.Heartbeat {
				hb.Reset(h.opts.Heartbeat - idle)
				continue
			}
			if err := sink.Send([][]byte{heartbeat}); err != nil {
				h.logger.Debug("subscriber gone", "stream", name, "cursor", sub.Cursor(), "err", err)
				return
			}
			lastSend = time.Now()
			hb.Reset(h.opts.Heartbeat)
		}
	}
}
