package client

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// ZeroID is the all-zero id, below every event id: resuming after it
// replays a stream from its first retained event.
const ZeroID = "00000000000000000000000000"

// Event is one event of a stream.
//
// Publish reads only Type and Data: the server assigns the id, and with it
// the time; ID, Stream and Time are ignored there, so that an event read
// from one stream can be published to another as it is.
type Event struct {
	// ID is the event's ULID, in its canonical 26-character form. Ids
	// strictly increase across all streams of a server, so that comparing
	// two of them as strings compares them in the log's order.
	ID string
	// Stream is the name of the stream the event was read from.
	Stream string
	// Type is the event's type. Read, an untyped event has the type
	// "message", as SSE and the history endpoint give it. Published, ""
	// sends no type.
	Type string
	// Data is the event's JSON value, compact: the bytes the server
	// stored, from Subscribe and History alike. Published, nil sends JSON
	// null, and the bytes go as given (not HTML-escaped).
	Data json.RawMessage
	// Time is when the server assigned the id: the id's millisecond
	// timestamp, in UTC.
	Time time.Time
}

// Reasons a Reset gives.
const (
	// ReasonTrimmed: events after the resume point were removed by
	// retention; what follows starts at the oldest retained event
	// (Reset.OldestID, empty when none is left).
	ReasonTrimmed = "trimmed"
	// ReasonUnknown: the resume point is newer than any id the server has
	// issued (it is from another server, or the database was restored
	// from an older copy); what follows is live.
	ReasonUnknown = "unknown"
	// ReasonDeleted: the stream was deleted. The server ends the
	// connection after it; Subscribe reconnects and waits for the stream's
	// next events, those of a stream of that name published to again.
	ReasonDeleted = "deleted"
	// ReasonGap is History's only reason: the history endpoint says that
	// events after the position were removed ("gap": true), not whether by
	// retention or by deletion.
	ReasonGap = "gap"
)

// Reset says that a stream does not continue exactly after the position
// a reader asked for: events were removed, or the position is unknown to
// the server. What follows it is exact again.
type Reset struct {
	// Reason is one of the Reason constants; a newer server may send
	// others.
	Reason string
	// OldestID is the oldest retained event after a trim, when the server
	// says it ("" otherwise).
	OldestID string
}

// Item is one thing a subscription or a history walk delivers: an event
// or a reset, never both. Exactly one of Event and Reset is set, so that
// code which reads an item's event without looking at its kind fails
// loudly on a reset instead of taking it for an event.
type Item struct {
	// ID is the position the item stands for: the event's id, or the id
	// the server gave the reset (reading after it continues after the
	// gap without reporting it again). Save this id to resume after the
	// item, whatever its kind.
	ID string
	// Event is set for an event.
	Event *Event
	// Reset is set when the stream does not continue exactly: see Reset.
	Reset *Reset
}

// From is where a subscription or a history walk starts. The zero value
// is Live.
type From struct {
	kind  fromKind
	id    string    // fromAfter
	since time.Time // fromSince
	last  int       // fromLast
	err   error     // why the value given to the constructor is unusable
}

type fromKind int

const (
	fromLive fromKind = iota
	fromAfter
	fromSince
	fromLast
)

// After starts after the event with the given id: the reader gets every
// event with a greater id. A position whose next events were removed, or
// that the server never issued, is answered with a Reset first.
func After(id string) From {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return From{kind: fromAfter, id: id, err: fmt.Errorf("%w: id %q is not a ULID: %v", ErrInvalid, id, err)}
	}
	return From{kind: fromAfter, id: u.String()}
}

// Beginning starts at the stream's first retained event: After(ZeroID).
// If the stream's first events were removed, the first item is a Reset
// that says so.
func Beginning() From { return After(ZeroID) }

// Since starts at the first event whose id carries t or a later time (ids
// carry milliseconds). No Reset is given for events removed before the
// start.
func Since(t time.Time) From {
	if t.IsZero() {
		return From{kind: fromSince, err: fmt.Errorf("%w: Since needs a time, not the zero time", ErrInvalid)}
	}
	return From{kind: fromSince, since: t}
}

// Last starts at the newest n events (n from 1 to the server's limit,
// 10,000) and continues live; History takes the newest n as of its first
// request, and what follows them up to the end of what is stored. No
// Reset is given for events removed before them.
func Last(n int) From {
	if n < 1 {
		return From{kind: fromLast, last: n, err: fmt.Errorf("%w: Last needs at least one event, not %d", ErrInvalid, n)}
	}
	return From{kind: fromLast, last: n}
}

// Live starts with the events committed after the subscription's request
// reaches the server. History does not accept it.
func Live() From { return From{} }

// ID is the id an After (or Beginning) start resumes after, canonical;
// "" for other starts.
func (f From) ID() string {
	if f.kind != fromAfter || f.err != nil {
		return ""
	}
	return f.id
}

// String describes the start, for messages.
func (f From) String() string {
	switch f.kind {
	case fromAfter:
		if f.id == ZeroID {
			return "the beginning"
		}
		return "after " + f.id
	case fromSince:
		return "since " + f.since.UTC().Format(time.RFC3339Nano)
	case fromLast:
		return fmt.Sprintf("the last %d", f.last)
	default:
		return "live"
	}
}

// newEvent makes an event read from stream, checking what the server
// sent: an id that is a ULID and data that is JSON.
func newEvent(stream, id, typ string, data []byte) (*Event, error) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return nil, fmt.Errorf("%w: event id %q is not a ULID", ErrProtocol, id)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("%w: event %s: data is not JSON", ErrProtocol, id)
	}
	if typ == "" {
		typ = "message"
	}
	return &Event{
		ID:     u.String(),
		Stream: stream,
		Type:   typ,
		Data:   json.RawMessage(data),
		Time:   ulid.Time(u.Time()).UTC(),
	}, nil
}

// before returns the id just below id: reading after it starts at id.
func before(id string) (string, error) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return "", err
	}
	for i := len(u) - 1; i >= 0; i-- {
		u[i]--
		if u[i] != 0xff {
			break
		}
	}
	return u.String(), nil
}
