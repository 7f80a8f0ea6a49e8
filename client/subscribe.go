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
// yielded an item, a reconnection resumes after the position the server
// gave in a block without data, if it gave one: sselog starts a Live
// stream with "id: <the newest id>" beside its retry hint, so that a Live
// start that reconnects before its first event misses nothing committed
// in between. Otherwise (After, Beginning, Since and Last starts, whose
// streams carry no such block) a reconnection before the first item
// repeats the start from gives: exact for After, Beginning and Since, and
// for Last the n newest as of the connection that delivers the first
// item. It waits the server's retry hint before a reconnection, with
// jitter, and backs off further while attempts keep failing (see
// WithBackoff), honouring Retry-After.
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
	// last is where a reconnection resumes: the id of the last item
	// yielded, or, before the first, the position a block without data
	// set (a live start's first block); "" when neither.
	last    string
	yielded bool          // an item has been yielded
	hint    time.Duration // the server's newest retry hint; 0 before any
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

// connect opens one SSE response: after s.last, or, when there is none,
// from the subscription's start.
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
			if perr := s.adopt(p.lastID); perr != nil {
				return healthy, perr
			}
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
		s.last, s.yielded = item.ID, true
		if !yield(item, nil) {
			return healthy, errStopped
		}
	}
}

// adopt takes, before the first item, the last event id a connection
// ended with as the point to resume after. Only a block without data can
// have set it then (an event would have been yielded): sselog's live
// start, whose first block is the retry hint and the id of the newest
// event, the position the stream starts after. Resuming there, rather
// than starting live again, loses nothing committed between the two
// connections. After the first item the resume point is that item's, as
// the server promises no other block without data mid-stream.
func (s *subscription) adopt(id string) error {
	if s.yielded || id == "" || id == s.last {
		return nil
	}
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return fmt.Errorf("%w: the id %q the stream started with is not a ULID", ErrProtocol, id)
	}
	if floor := s.floor(); floor != "" && u.String() < floor {
		return fmt.Errorf("%w: the stream started at %s, before %s", ErrProtocol, u, floor)
	}
	s.last = u.String()
	return nil
}

// floor is the id every event must be above: the resume point, or an
// After start's id.
func (s *subscription) floor() string {
	if s.last == "" && s.from.kind == fromAfter {
		return s.from.id
	}
	return s.last
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
	if floor := s.floor(); floor != "" && e.ID <= floor {
		return Item{}, fmt.Errorf("%w: event %s after %s: ids must increase", ErrProtocol, e.ID, floor)
	}
	return Item{ID: e.ID, Event: e}, nil
}
