package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
)

// Subscribe follows stream from the start from gives, over SSE, and
// yields its events and resets in order until ctx ends or the loop stops.
//
// The iterator reconnects by itself when a connection fails or ends: with
// Last-Event-ID set to the id of the last item it yielded, a reset's
// included, so that the server resumes exactly after it. Until it has
// yielded an item, a reconnection repeats the start from gives. It waits
// the server's retry hint before a reconnection, with jitter, and backs
// off further while attempts keep failing (see WithBackoff), honouring
// Retry-After.
//
// Errors that reconnecting cannot fix (a refused request: ErrInvalid,
// ErrUnauthorized, ErrForbidden, ErrNotFound; an answer that is not SSE or
// not sselog's: ErrProtocol) are yielded once, and end the iteration. When
// ctx ends, the iteration ends with ctx's error, wrapped with the failure
// that was being retried, if any. Every other yielded error is last too:
// an error is the end of the iteration.
//
// A reset is yielded as an Item with Reset set, never as an event. After
// a ReasonDeleted reset the iterator keeps following the stream: it
// reconnects after the reset's id and gets the events of the stream
// published to again under that name, if it ever is. A consumer that
// wants to stop there stops ranging.
func (c *Client) Subscribe(ctx context.Context, stream string, from From) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		if from.err != nil {
			yield(Item{}, fmt.Errorf("subscribe to %s: %w", stream, from.err))
			return
		}
		s := &subscription{c: c, stream: stream, from: from}
		if err := s.run(ctx, yield); err != nil && !errors.Is(err, errStopped) {
			yield(Item{}, fmt.Errorf("subscribe to %s: %w", stream, err))
		}
	}
}

// errStopped says that the consumer stopped ranging.
var errStopped = errors.New("stopped by the consumer")

// subscription is the state one Subscribe iteration keeps across its
// connections.
type subscription struct {
	c      *Client
	stream string
	from   From
	last   string        // id of the last item yielded; "" before the first
	hint   time.Duration // the server's newest retry hint; 0 before any
}

// run connects, reads and reconnects until the consumer stops (errStopped),
// ctx ends, or an error retrying cannot fix.
func (s *subscription) run(ctx context.Context, yield func(Item, error) bool) error {
	failures := 0
	var last error // the failure being retried
	for {
		body, err := s.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctxError(ctx, last)
			}
			var final errFinal
			if errors.As(err, &final) || !retryable(err) {
				return err
			}
			last = err
			failures++
			if !sleep(ctx, s.c.pause(max(s.hint, retryAfter(err)), failures)) {
				return ctxError(ctx, last)
			}
			continue
		}
		healthy, err := s.read(ctx, body, yield)
		body.Close()
		switch {
		case errors.Is(err, errStopped):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrProtocol):
			return err
		}
		// The stream ended or broke. One that delivered something (an
		// item or a heartbeat) was healthy: the next one starts over at
		// the server's hint. One that delivered nothing (a server over
		// its subscriber limit answers with only a retry hint) counts as
		// a failure.
		var pause time.Duration
		if healthy {
			failures, last = 0, nil
			pause = s.hint + rand.N(max(s.hint/2, s.c.minBackoff))
		} else {
			failures++
			last = fmt.Errorf("stream ended before delivering anything: %w", err)
			pause = s.c.pause(s.hint, failures)
		}
		if !sleep(ctx, pause) {
			return ctxError(ctx, last)
		}
	}
}

// connect opens one SSE response: from the last item yielded, or, before
// the first, from the subscription's start.
func (s *subscription) connect(ctx context.Context) (io.ReadCloser, error) {
	u := s.c.streamURL(s.stream, "/events")
	resume := s.last
	if resume == "" {
		switch s.from.kind {
		case fromAfter:
			resume = s.from.id
		case fromSince:
			u += "?since=" + url.QueryEscape(s.from.since.UTC().Format(time.RFC3339Nano))
		case fromLast:
			u += "?last=" + strconv.Itoa(s.from.last)
		}
	}
	req, err := s.c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if resume != "" {
		req.Header.Set("Last-Event-ID", resume)
	}
	resp, err := s.c.streaming.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: status %d to an SSE request, want 200", ErrProtocol, resp.StatusCode)
		}
		return nil, responseError(resp, s.c.now())
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: Content-Type %q to an SSE request, want text/event-stream", ErrProtocol, resp.Header.Get("Content-Type"))
	}
	return resp.Body, nil
}

// read yields the items of one SSE response until it ends, and reports
// whether it delivered anything: an item or a comment.
func (s *subscription) read(ctx context.Context, body io.Reader, yield func(Item, error) bool) (healthy bool, err error) {
	p := newSSEParser(body)
	for {
		ev, err := p.next()
		if p.hasRetry {
			s.hint, p.hasRetry = p.retry, false
		}
		if p.comments > 0 {
			healthy, p.comments = true, 0
		}
		if err != nil {
			return healthy, err
		}
		item, err := s.item(ev)
		if err != nil {
			return healthy, err
		}
		healthy = true
		if ctx.Err() != nil {
			// What the parser still holds is not yielded once ctx has
			// ended: cancelling stops the items at once.
			return healthy, ctx.Err()
		}
		s.last = item.ID
		if !yield(item, nil) {
			return healthy, errStopped
		}
	}
}

// item turns a dispatched SSE event into an Item, checking it against
// what the server promises: ULID ids, JSON data, and events in increasing
// id order after the resume point (a reset's id is the server's to
// choose: after an unknown resume point it is lower).
func (s *subscription) item(ev sseEvent) (Item, error) {
	if ev.typ == "reset" {
		u, err := ulid.ParseStrict(ev.id)
		if err != nil {
			return Item{}, fmt.Errorf("%w: reset id %q is not a ULID", ErrProtocol, ev.id)
		}
		var r struct {
			Reason   string `json:"reason"`
			OldestID string `json:"oldest_id"`
		}
		if err := json.Unmarshal(ev.data, &r); err != nil || r.Reason == "" {
			return Item{}, fmt.Errorf("%w: reset %s: data %.200q is not {\"reason\": ...}", ErrProtocol, ev.id, ev.data)
		}
		return Item{ID: u.String(), Reset: &Reset{Reason: r.Reason, OldestID: r.OldestID}}, nil
	}
	e, err := newEvent(s.stream, ev.id, ev.typ, ev.data)
	if err != nil {
		return Item{}, err
	}
	floor := s.last
	if floor == "" && s.from.kind == fromAfter {
		floor = s.from.id
	}
	if floor != "" && e.ID <= floor {
		return Item{}, fmt.Errorf("%w: event %s after %s: ids must increase", ErrProtocol, e.ID, floor)
	}
	return Item{ID: e.ID, Event: e}, nil
}
