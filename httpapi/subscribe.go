package httpapi

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
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
	st, err := sseStart(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.serveFeed(w, r, st, name, func() (feed, error) {
		sub, err := h.subscription(name, st)
		if err != nil {
			return nil, err
		}
		return sub, nil
	})
}

// serveFeed runs the SSE stream of the feed open opens (what names it in
// the log), within the subscriber limits, until the subscriber goes, the
// feed ends or the server shuts down.
func (h *Handler) serveFeed(w http.ResponseWriter, r *http.Request, st start, what string, open func() (feed, error)) {
	release, ok := h.takeSlot(r)
	if !ok {
		// Over a limit: told to come back later, spread out.
		h.logger.Debug("subscriber over the limit", "stream", what, "remote", r.RemoteAddr)
		ssewire.RetryOnly(w, r, h.retryLine(true))
		return
	}
	sub, err := open()
	if err != nil {
		release()
		if errors.Is(err, stream.ErrClosed) || errors.Is(err, store.ErrClosed) {
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
	err = h.wire.Start(w, r, h.startBlock(st, sub.Cursor()), func(sink ssewire.Sink) {
		defer release()
		defer sub.Close()
		h.follow(sub, sink, what, lifetime, limited)
	})
	if err != nil {
		sub.Close()
		release()
		if errors.Is(err, ssewire.ErrClosed) {
			ssewire.RetryOnly(w, r, h.retryLine(true))
			return
		}
		// The connection is in an unknown state: give up on it.
		h.logger.Debug("starting the stream failed", "stream", what, "err", err)
	}
}

// MaxLast is the largest count the "last" parameter of an SSE stream
// takes: its start is found by walking back that many keys in one read
// transaction, which must stay short.
const MaxLast = 10000

// startKind is how an SSE stream begins.
type startKind int

const (
	// startLive: only what is committed from now on.
	startLive startKind = iota
	// startResume: after an id the client was handed (Last-Event-ID, or
	// last_event_id); exact, with a reset where it cannot be.
	startResume
	// startSince: at the first event at or after a time.
	startSince
	// startLast: with the newest n events.
	startLast
)

// start is where an SSE stream begins: after the id after (startResume,
// startSince), or with the newest last events (startLast).
type start struct {
	kind  startKind
	after store.ID
	last  int
}

// sseStart reads where a stream begins from the request. The
// Last-Event-ID header, when present and not empty, wins over every query
// parameter, invalid ones included: it is what a reconnecting EventSource
// sends, and its resume must stay exact whatever URL the page was opened
// with. Otherwise at most one of last_event_id, since and last may be
// given (an empty value is not given); none means live.
func sseStart(r *http.Request) (start, error) {
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		id, err := store.ParseID(s)
		if err != nil {
			return start{}, errorf(http.StatusBadRequest, "Last-Event-ID: %v", err)
		}
		return start{kind: startResume, after: id}, nil
	}
	q := r.URL.Query()
	var given []string
	for _, p := range []string{"last_event_id", "since", "last"} {
		if q.Get(p) != "" {
			given = append(given, p)
		}
	}
	if len(given) > 1 {
		return start{}, errorf(http.StatusBadRequest, "give at most one of last_event_id, since and last (got %s)", strings.Join(given, " and "))
	}
	if len(given) == 0 {
		return start{kind: startLive}, nil
	}
	switch v := q.Get(given[0]); given[0] {
	case "last_event_id":
		id, err := store.ParseID(v)
		if err != nil {
			return start{}, errorf(http.StatusBadRequest, "last_event_id: %v", err)
		}
		return start{kind: startResume, after: id}, nil
	case "since":
		after, err := parseSince(v)
		if err != nil {
			return start{}, err
		}
		return start{kind: startSince, after: after}, nil
	default:
		n, err := parseLast(v)
		if err != nil {
			return start{}, err
		}
		return start{kind: startLast, last: n}, nil
	}
}

// subscription subscribes to stream from st. A client that names an id
// resumes after it (the log is read first, and a reset says where that
// cannot be exact); one that names nothing wants only what is committed
// from now on. A start by time or by count claims no continuity, so it
// goes through SubscribeStart: no reset for events removed before it, or
// for a time beyond the newest event. A start by count finds its id in one
// read transaction, then subscribes after it: what is committed in
// between is replayed like everything after that id.
func (h *Handler) subscription(name string, st start) (*stream.Subscription, error) {
	switch st.kind {
	case startResume:
		return h.hub.SubscribeAfter(name, st.after)
	case startSince:
		return h.hub.SubscribeStart(name, st.after)
	case startLast:
		after, err := h.log.StartOfLast(name, st.last)
		if err != nil {
			return nil, err
		}
		return h.hub.SubscribeStart(name, after)
	default:
		return h.hub.SubscribeLive(name)
	}
}

// parseSince reads a "since" parameter, an RFC 3339 time (with or
// without a fraction of a second) or a number of Unix milliseconds
// (ASCII digits only), and returns the id to read after to start at the
// first event at or after that time (store.IDBefore).
//
// time.Parse is laxer than RFC 3339 (a comma before the fraction, an
// offset of 24 hours or more), and a query parameter is no place for
// guesses: the text must also have RFC 3339's shape.
func parseSince(s string) (store.ID, error) {
	var t time.Time
	if digitsOnly(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			// Only a number too large for int64 fails here.
			return store.ID{}, errorf(http.StatusBadRequest, "since: %.40q Unix milliseconds: %v", s, store.ErrTimeRange)
		}
		t = time.UnixMilli(ms)
	} else {
		var err error
		t, err = time.Parse(time.RFC3339Nano, s)
		if err != nil || !rfc3339Shape(s) {
			return store.ID{}, errorf(http.StatusBadRequest, "since: %.40q is neither an RFC 3339 time (2026-01-02T15:04:05Z, 2026-01-02T15:04:05.123+02:00) nor Unix milliseconds (digits only)", s)
		}
	}
	after, err := store.IDBefore(t)
	if err != nil {
		return store.ID{}, errorf(http.StatusBadRequest, "since: %.40q: %v", s, err)
	}
	return after, nil
}

// rfc3339Shape reports whether s, which time.Parse accepted as RFC 3339,
// has the grammar's shape after the seconds: an optional "." and digits,
// then "Z" or an offset of at most 23:59. (time.Parse checks the fields
// before it, and refuses a lower-case "t" or "z".)
func rfc3339Shape(s string) bool {
	const secs = len("2006-01-02T15:04:05")
	if len(s) <= secs {
		return false
	}
	rest := s[secs:]
	if rest[0] == '.' {
		i := 1
		for i < len(rest) && '0' <= rest[i] && rest[i] <= '9' {
			i++
		}
		if i == 1 {
			return false
		}
		rest = rest[i:]
	}
	if rest == "Z" {
		return true
	}
	return len(rest) == len("+00:00") && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		digitsOnly(rest[1:3]) && digitsOnly(rest[4:]) && rest[1:3] <= "23" && rest[4:] <= "59"
}

// parseLast reads a "last" parameter: ASCII digits only, 1 to MaxLast.
func parseLast(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if !digitsOnly(s) || err != nil || n < 1 || n > MaxLast {
		return 0, errorf(http.StatusBadRequest, "last must be a number of events from 1 to %d (digits only), not %.40q", MaxLast, s)
	}
	return n, nil
}

// digitsOnly reports whether s is one or more ASCII digits: no sign, no
// space, no exponent, no other script's digits.
func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
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

// startBlock is a stream's first block: the retry hint, and for a start
// that is not a resume, the id it starts after. A start has a position
// too: where the log stood, or the id before the newest n, or before a
// time. Sent as the first block's id (a block without data dispatches
// nothing, but sets the client's last event id), it makes a reconnect
// before the first event a resume from there, not a new start that would
// skip what was committed in between. A time after the newest id has no
// such position yet (a resume from it would be told it is unknown): its
// reconnect starts by the time again, which is exact too.
func (h *Handler) startBlock(st start, cursor store.ID) []byte {
	switch st.kind {
	case startLive, startLast:
		return liveFirst(h.retry, cursor)
	case startSince:
		if cursor.Compare(h.log.LastID()) <= 0 {
			return liveFirst(h.retry, cursor)
		}
	}
	return h.retry
}

// liveFirst is the first block of a stream that is not a resume: the retry
// hint and the id the stream starts after.
func liveFirst(retry []byte, cursor store.ID) []byte {
	b := make([]byte, 0, len(retry)+len("id: \n")+26)
	b = append(b, retry[:len(retry)-1]...) // without the blank line that ends the block
	b = append(cursor.AppendText(append(b, "id: "...)), "\n\n"...)
	return b
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
// feed is what serveFeed runs: a *stream.Subscription, or a
// *stream.Merged.
type feed interface {
	Next() ([][]byte, <-chan struct{}, error)
	Cursor() store.ID
	Close()
}

func (h *Handler) follow(sub feed, sink ssewire.Sink, name string, lifetime time.Duration, limited bool) {
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
