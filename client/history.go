package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// HistoryPage is how many events History asks for per request: the
// server's largest page.
const HistoryPage = 1000

// History walks stream's stored events from the start from gives (After,
// Beginning, Since, or Last: the n newest as of the first request; Live
// is refused with ErrInvalid), a page at a time over the history
// endpoint, without SSE, and ends after a page that comes back empty: at
// the end of what is stored by then. Each page is retried like a publish
// (see WithBackoff) until ctx ends.
//
// Where the server says that events after the position were removed
// ("gap": true), History yields a Reset with ReasonGap before the events
// that follow. Its ID is the id just below the first of them, so that
// resuming after it continues with that event, and is not told of the gap
// again; when no event follows, it is the position asked for, and the
// walk ends. Since and Last starts report no gap for what was removed
// before them.
//
// As with Subscribe, an error is the last thing yielded.
func (c *Client) History(ctx context.Context, stream string, from From) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		fail := func(err error) { yield(Item{}, fmt.Errorf("history of %s: %w", stream, err)) }
		if from.err != nil {
			fail(from.err)
			return
		}
		// The first page starts where from says (param=value); the next
		// ones after the last event read.
		var after, param, value string
		switch from.kind {
		case fromAfter:
			after = from.id
			param, value = "after", after
		case fromSince:
			param, value = "since", from.since.UTC().Format(time.RFC3339Nano)
		case fromLast:
			param, value = "last", strconv.Itoa(from.last)
		default:
			fail(fmt.Errorf("%w: history starts After an id, at the Beginning, Since a time or with the Last n, not %s", ErrInvalid, from))
			return
		}
		for {
			page, err := c.historyPage(ctx, stream, param, value)
			if err != nil {
				fail(err)
				return
			}
			if page.Gap && len(page.Events) == 0 {
				if after != "" {
					yield(Item{ID: after, Reset: &Reset{Reason: ReasonGap}}, nil)
				}
				return
			}
			if len(page.Events) == 0 {
				return
			}
			if page.Gap {
				id, err := before(page.Events[0].ID)
				if err != nil {
					fail(fmt.Errorf("%w: event id %q is not a ULID", ErrProtocol, page.Events[0].ID))
					return
				}
				if !yield(Item{ID: id, Reset: &Reset{Reason: ReasonGap, OldestID: page.Events[0].ID}}, nil) {
					return
				}
			}
			for _, pe := range page.Events {
				e, err := newEvent(stream, pe.ID, pe.Type, pe.Data)
				if err != nil {
					fail(err)
					return
				}
				if after != "" && e.ID <= after {
					fail(fmt.Errorf("%w: event %s after %s: ids must increase", ErrProtocol, e.ID, after))
					return
				}
				after = e.ID
				param, value = "after", after
				if ctx.Err() != nil {
					fail(ctx.Err())
					return
				}
				if !yield(Item{ID: e.ID, Event: e}, nil) {
					return
				}
			}
		}
	}
}

// historyPage is one page of the history endpoint.
type historyPage struct {
	Events []struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"events"`
	Gap bool `json:"gap"`
}

// historyPage reads the page that starts where param (after, since or
// last) says.
func (c *Client) historyPage(ctx context.Context, stream, param, value string) (historyPage, error) {
	q := url.Values{"limit": {strconv.Itoa(HistoryPage)}, param: {value}}
	var page historyPage
	err := c.retry(ctx, func() error {
		page = historyPage{}
		return c.getJSON(ctx, c.streamURL(stream, "/history")+"?"+q.Encode(), &page)
	})
	return page, err
}

// StreamInfo describes a stream as the server holds it.
type StreamInfo struct {
	Name  string `json:"name"`
	Count uint64 `json:"count"`
	// Bytes is the stored size of the stream's events.
	Bytes uint64 `json:"bytes"`
	// FirstID and LastID are the oldest and newest retained events' ids,
	// ZeroID when the stream holds none.
	FirstID string `json:"first_id"`
	LastID  string `json:"last_id"`
	// LowWater is the newest id ever removed from the stream, ZeroID if
	// none.
	LowWater string `json:"low_water"`
}

// Info describes stream: ErrNotFound for a stream never published to, or
// deleted. It is retried like a publish.
func (c *Client) Info(ctx context.Context, stream string) (StreamInfo, error) {
	var info StreamInfo
	err := c.retry(ctx, func() error {
		info = StreamInfo{}
		return c.getJSON(ctx, c.streamURL(stream, ""), &info)
	})
	if err != nil {
		return StreamInfo{}, fmt.Errorf("info of %s: %w", stream, err)
	}
	return info, nil
}

// getJSON is one GET whose 200 answer is decoded into v.
func (c *Client) getJSON(ctx context.Context, u string, v any) error {
	req, err := c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return responseError(resp, c.now())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: answer to GET %s: %v", ErrProtocol, u, err)
	}
	return nil
}
